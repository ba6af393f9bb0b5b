// The start page: the projects the signed-in token reads, each linked to its page of recent
// jobs and insights.

import { $, api, onSignIn, showLogin } from './common.js';

onSignIn(() => start());

async function start() {
  try {
    const answer = await api('/api/v1/projects');
    const list = $('#projects');
    list.replaceChildren();
    for (const p of answer.items) {
      const li = document.createElement('li');
      const a = document.createElement('a');
      a.href = `/ui/projects/${p.slug}`;
      a.textContent = p.slug;
      li.append(a);
      list.append(li);
    }
    if (!answer.items.length) $('#status').textContent = 'No jobs yet: jobs created with `tailrace job create` appear here.';
  } catch (e) {
    if (e.status === 401) return showLogin();
    $('#status').textContent = e.message;
  }
}

start();
