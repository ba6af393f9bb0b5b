// A project's page: its recent jobs with their status (each linked to its job page, older ones
// page by page), its flaky tests, and for the workflow named in `?workflow=` (the job page links
// here with its own) the most failed and slowest tests, from the CircleCI-shaped insights API.

import { $, api, cell, duration, onSignIn, showLogin } from './common.js';

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

let older = null; // next_page_token of the jobs shown

/// Appends a page of the project's jobs to the table.
async function loadJobs() {
  const page = await api(`/api/v1/projects/${slug}/jobs${older ? `?page-token=${encodeURIComponent(older)}` : ''}`);
  const body = $('#jobs tbody');
  for (const j of page.items) {
    const tr = document.createElement('tr');
    tr.className = `job status-${j.status}`;
    const num = cell(tr, '', 'num');
    const a = document.createElement('a');
    a.href = `/ui/jobs/${encodeURIComponent(j.id)}`;
    a.textContent = `#${j.number}`;
    num.append(a);
    const badge = document.createElement('span');
    badge.className = 'badge';
    badge.textContent = j.status;
    cell(tr, '').append(badge);
    cell(tr, [j.workflow, j.name].filter(Boolean).join(' · '));
    cell(tr, j.branch || '');
    cell(tr, (j.commit || '').slice(0, 10), 'mono');
    cell(tr, new Date(j.created_at_ms).toLocaleString('en-GB'));
    cell(tr, duration(j.duration_ms), 'num');
    body.append(tr);
  }
  if (!body.children.length) {
    const tr = document.createElement('tr');
    cell(tr, 'No jobs yet.', 'hint').colSpan = 7;
    body.append(tr);
  }
  older = page.next_page_token;
  $('#older').hidden = !older;
}

$('#older').addEventListener('click', () => loadJobs().catch((e) => ($('#status').textContent = e.message)));

async function start() {
  $('#title').textContent = `${slug}${workflow ? ` · ${workflow}` : ''}`;
  document.title = `${slug} · Tailrace`;
  try {
    $('#jobs tbody').replaceChildren();
    older = null;
    await loadJobs();
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
