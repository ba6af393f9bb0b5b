// A project's insights page: its flaky tests, and for the workflow named in `?workflow=` (the
// job page links here with its own) the most failed and slowest tests, from the
// CircleCI-shaped insights API.

import { $, api, cell, onSignIn, showLogin } from './common.js';

const [vcs, org, repo] = location.pathname.split('/').filter(Boolean).slice(2, 5).map(decodeURIComponent);
const slug = `${vcs}/${org}/${repo}`;
const workflow = new URLSearchParams(location.search).get('workflow');
onSignIn(() => start());

function name(t) {
  return `${t.classname} › ${t['test-name'] ?? t.test_name}`;
}

function fill(table, rows, columns) {
  const body = $(`${table} tbody`);
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement('tr');
    columns.forEach(([get, cls]) => cell(tr, get(r), cls));
    body.append(tr);
  }
  if (!rows.length) {
    const tr = document.createElement('tr');
    cell(tr, 'None.', 'hint').colSpan = columns.length;
    body.append(tr);
  }
}

async function start() {
  $('#title').textContent = `${slug} insights${workflow ? ` · ${workflow}` : ''}`;
  document.title = `${slug} insights · Tailrace`;
  try {
    const flaky = await api(`/api/v2/insights/${slug}/flaky-tests`);
    fill('#flaky', flaky['flaky-tests'], [
      [name, 'name'],
      [(f) => String(f['times-flaked']), 'num'],
      [(f) => `${f['time-wasted'].toFixed(2)} s`, 'num'],
      [(f) => `#${f['job-number']}`, 'num'],
    ]);
    if (workflow) {
      const m = await api(`/api/v2/insights/${slug}/workflows/${encodeURIComponent(workflow)}/test-metrics`);
      fill('#failed', m.most_failed_tests, [[name, 'name'], [(t) => String(t.failed_runs), 'num'], [(t) => String(t.total_runs), 'num']]);
      fill('#slowest', m.slowest_tests, [[name, 'name'], [(t) => `${t.p95_duration.toFixed(3)} s`, 'num'], [(t) => String(t.total_runs), 'num']]);
      $('#workflow-metrics').hidden = false;
    }
  } catch (e) {
    if (e.status === 401) return showLogin();
    $('#status').textContent = e.message;
  }
}

start();
