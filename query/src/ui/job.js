// The job page: the job's steps with live status, and the selected step's output (a window
// of its lines fetched as the reader scrolls, followed live at its end: output_view.js). The
// token lives in an HttpOnly cookie (POST /ui/session); nothing here puts it in a URL.

import { $, api, cell, duration, onSignIn, showLogin } from './common.js';
import { OutputView } from './output_view.js';

const jobId = decodeURIComponent(location.pathname.split('/').filter(Boolean)[2] || '');
onSignIn(() => start());

let steps = [];
let current = null; // the step being shown: {id, view}

/// Updates the step list in place (a button per step, kept across refreshes so that keyboard
/// focus stays where it is).
function renderSteps() {
  const list = $('#steps');
  for (const s of steps) {
    let b = list.querySelector(`button[data-step="${CSS.escape(s.step)}"]`);
    if (!b) {
      const li = document.createElement('li');
      b = document.createElement('button');
      b.type = 'button';
      b.dataset.step = s.step;
      b.innerHTML = '<span class="badge"></span><span class="name"></span><span class="meta"></span>';
      b.addEventListener('click', () => show(s.step));
      li.append(b);
      list.append(li);
    }
    b.className = `step status-${s.status}`;
    b.setAttribute('aria-current', current && current.id === s.step ? 'true' : 'false');
    const running = s.status === 'running';
    const took = running ? duration(Date.now() - s.started_at_ms) : duration(s.duration_ms);
    const code = s.exit_code === undefined || s.exit_code === null ? '' : ` · exit ${s.exit_code}`;
    b.querySelector('.badge').textContent = s.status;
    b.querySelector('.name').textContent = s.name || s.step;
    b.querySelector('.meta').textContent = `${took}${code}`;
  }
}

async function refreshSteps() {
  const answer = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}/steps`);
  steps = answer.items;
  renderSteps();
  return steps;
}

function setStatus(text) {
  $('#status').textContent = text;
}

/// Shows a step's output: at line `line` if given, else at its start (short steps) or its end.
function show(step, line) {
  if (current?.id === step) {
    if (line) current.view.jumpToLine(line).catch((e) => setStatus(e.message));
    return;
  }
  current?.view.close();
  const s = steps.find((x) => x.step === step);
  const view = new OutputView({ job: jobId, step, length: s?.length, ended: s ? s.status !== 'running' : false, scroller: $('#output'), status: setStatus });
  view.onEnd = (end) => {
    if ($('#timestamps').checked) view.loadTimes().catch(() => {});
    setStatus(`${step} ended: ${end.reason}${end.exit_code === undefined ? '' : `, exit ${end.exit_code}`}`);
    refreshSteps().catch(() => {});
  };
  current = { id: step, view };
  $('#output').replaceChildren(view.root);
  $('#step-title').textContent = s?.name || step;
  $('#raw').href = `/api/v1/jobs/${encodeURIComponent(jobId)}/steps/${encodeURIComponent(step)}/output`;
  $('#follow').checked = !line;
  renderSteps();
  selectTab('output');
  if ($('#timestamps').checked) view.loadTimes().catch(() => {});
  view.open(line).catch((e) => setStatus(e.message));
}

/// `#STEP-L123` (or `#STEP`): the step and line a URL links to.
function linked() {
  const m = /^(.+?)(?:-L(\d+))?$/.exec(decodeURIComponent(location.hash.slice(1)));
  return m ? { step: m[1], line: m[2] ? Number(m[2]) : null } : null;
}

// Scrolling fetches more lines near either edge of the window; the position slider follows.
let positionFrame = 0;
$('#output').addEventListener('scroll', () => {
  current?.view.onScroll();
  if (!positionFrame) {
    positionFrame = requestAnimationFrame(() => {
      positionFrame = 0;
      if (current) $('#position').value = String(Math.round(current.view.position() * 1000));
    });
  }
});
$('#position').addEventListener('change', (e) => {
  if (!current) return;
  const v = Number(e.target.value);
  const view = current.view;
  const go = v >= 1000 ? view.jumpToEnd() : (view.setFollow(false), view.jumpToOffset(Math.floor((v / 1000) * view.length)));
  go.catch((err) => setStatus(err.message));
});
$('#to-start').addEventListener('click', () => current?.view.jumpToLine(1).catch((e) => setStatus(e.message)));
$('#to-end').addEventListener('click', () => current?.view.jumpToEnd().catch((e) => setStatus(e.message)));

let job = null;

/// Tabs: arrow keys move between them, as the ARIA tabs pattern has it.
function selectTab(name) {
  for (const t of ['output', 'tests', 'artifacts']) {
    const on = t === name;
    $(`#tab-${t}`).setAttribute('aria-selected', String(on));
    $(`#tab-${t}`).tabIndex = on ? 0 : -1;
    $(`#panel-${t}`).hidden = !on;
  }
  if (name === 'tests') loadTests().catch((e) => ($('#tests-summary').textContent = e.message));
  if (name === 'artifacts') loadArtifacts().catch((e) => ($('#artifacts-summary').textContent = e.message));
}

const tabs = ['output', 'tests', 'artifacts'];
for (const t of tabs) {
  $(`#tab-${t}`).addEventListener('click', () => selectTab(t));
  $(`#tab-${t}`).addEventListener('keydown', (e) => {
    const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
    if (!d) return;
    const next = tabs[(tabs.indexOf(t) + d + tabs.length) % tabs.length];
    selectTab(next);
    $(`#tab-${next}`).focus();
  });
}

/// Every page of a paginated API answer.
async function all(path) {
  const items = [];
  let token = null;
  do {
    const page = await api(token ? `${path}?page-token=${encodeURIComponent(token)}` : path);
    items.push(...page.items);
    token = page.next_page_token;
  } while (token);
  return items;
}

/// The job's test results, failures first, flaky tests marked.
async function loadTests() {
  const [vcs, org, repo] = job.project.split('/');
  const base = `/api/v2/project/${vcs}/${org}/${repo}/${job.number}/tests`;
  // CircleCI's insights answer is kebab-case. A job token cannot read insights: no marks then.
  const [tests, flaky] = await Promise.all([all(base), api(`/api/v2/insights/${vcs}/${org}/${repo}/flaky-tests`).catch(() => ({ 'flaky-tests': [] }))]);
  const isFlaky = new Set(flaky['flaky-tests'].map((f) => `${f.classname}\u0000${f['test-name']}`));
  const rank = { failure: 0, error: 0, success: 2, skipped: 3 };
  tests.sort((a, b) => (rank[a.result] ?? 1) - (rank[b.result] ?? 1) || a.classname.localeCompare(b.classname) || a.name.localeCompare(b.name));
  const body = $('#tests tbody');
  body.replaceChildren();
  for (const t of tests) {
    const tr = document.createElement('tr');
    tr.className = `result-${t.result}`;
    cell(tr, t.result, 'result');
    const name = cell(tr, `${t.classname} › ${t.name}`, 'name');
    if (isFlaky.has(`${t.classname}\u0000${t.name}`)) {
      const badge = document.createElement('span');
      badge.className = 'flaky';
      badge.textContent = 'flaky';
      name.append(' ', badge);
    }
    if (t.message) {
      const pre = document.createElement('pre');
      pre.textContent = t.message;
      name.append(pre);
    }
    cell(tr, `${t.run_time.toFixed(3)} s`, 'num');
    body.append(tr);
  }
  const failed = tests.filter((t) => t.result === 'failure' || t.result === 'error').length;
  $('#tests-summary').textContent = tests.length ? `${tests.length} tests, ${failed} failed` : 'No test results were uploaded for this job.';
}

function size(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
}

async function loadArtifacts() {
  const items = await all(`/api/v1/jobs/${encodeURIComponent(jobId)}/artifacts`);
  const body = $('#artifacts tbody');
  body.replaceChildren();
  for (const a of items) {
    const tr = document.createElement('tr');
    const td = cell(tr, '');
    const link = document.createElement('a');
    link.href = a.url;
    link.textContent = a.path;
    td.append(link);
    cell(tr, size(a.size), 'num');
    cell(tr, a.content_type);
    body.append(tr);
  }
  $('#artifacts-summary').textContent = items.length ? `${items.length} artifacts` : 'No artifacts were uploaded for this job.';
}

/// Search: the server finds the lines (wherever the bytes are, however long the step); each
/// result links to its line.
$('#search').addEventListener('submit', async (e) => {
  e.preventDefault();
  const q = $('#q').value;
  if (!q || !current) return;
  const step = current.id;
  const answer = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}/steps/${encodeURIComponent(step)}/search?q=${encodeURIComponent(q)}`)
    .catch((err) => ({ error: err.message }));
  const list = $('#results');
  list.replaceChildren();
  if (answer.error) {
    $('#search-summary').textContent = answer.error;
    return;
  }
  for (const m of answer.matches) {
    const li = document.createElement('li');
    const a = document.createElement('a');
    a.href = `#${step}-L${m.line}`;
    a.textContent = `${m.line}`;
    const text = document.createElement('span');
    text.textContent = m.text;
    li.append(a, text);
    list.append(li);
  }
  list.hidden = answer.matches.length === 0;
  const n = answer.matches.length;
  $('#search-summary').textContent = `${n}${answer.truncated ? '+' : ''} line${n === 1 ? '' : 's'} match`;
});

/// A link to a line (a search result, a shared URL): the view goes there, fetching it if needed.
window.addEventListener('hashchange', () => {
  const to = linked();
  if (to && steps.some((s) => s.step === to.step)) show(to.step, to.line);
});

/// Timestamps: each line's arrival time from the server's time index, fetched when turned on
/// and every few seconds while the step runs.
$('#timestamps').addEventListener('change', (e) => {
  $('#output').classList.toggle('with-times', e.target.checked);
  if (e.target.checked && current) current.view.loadTimes().catch((err) => setStatus(err.message));
});
setInterval(() => {
  if ($('#timestamps').checked && current && !current.view.ended) current.view.loadTimes().catch(() => {});
}, 5000);

/// Following: back to the end (fetching it if the window is elsewhere), then kept there.
$('#follow').addEventListener('change', (e) => {
  if (!current) return;
  const view = current.view;
  if (!e.target.checked) view.setFollow(false);
  else if (view.live) {
    view.setFollow(true);
    view.toBottom();
  } else view.jumpToEnd().catch((err) => setStatus(err.message));
});

async function start() {
  try {
    job = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
    $('#title').textContent = `${job.project} #${job.number}`;
    const insights = $('#insights');
    insights.href = `/ui/projects/${job.project}${job.workflow ? `?workflow=${encodeURIComponent(job.workflow)}` : ''}`;
    insights.hidden = false;
    document.title = `${job.project} #${job.number} · Tailrace`;
    await refreshSteps();
  } catch (e) {
    if (e.status === 401) return showLogin();
    setStatus(e.message);
    return;
  }
  const to = linked();
  const first = steps.find((s) => s.step === to?.step);
  if (first) show(first.step, to.line);
  else if (steps[0]) show(steps[0].step);
  // Steps appear and end while the page is open.
  setInterval(() => refreshSteps().then(() => {
    if (!current && steps[0]) show(steps[0].step);
  }).catch(() => {}), 2000);
}

start();
