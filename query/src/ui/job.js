// The job page: the job's steps with live status, and the selected step's output followed over
// the websocket tail from byte 0, rendered by terminal.js. The token lives in an HttpOnly
// cookie (POST /ui/session); nothing here puts it in a URL.

import { $, api, cell, onSignIn, showLogin } from './common.js';
import { Terminal } from './terminal.js';

const jobId = decodeURIComponent(location.pathname.split('/').filter(Boolean)[2] || '');
onSignIn(() => start());

function duration(ms) {
  if (ms === undefined || ms === null) return '';
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s}s` : `${Math.floor(s / 60)}m ${s % 60}s`;
}

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

/// Lines the page keeps at most; older ones are dropped (in batches of `DROP`), so a long log
/// followed live costs bounded memory. The raw-output link has every byte.
const KEEP_LINES = 20000;
const DROP = 1000;

/// One step's output view: lines in an ordered list, each with its number as a link.
class StepView {
  constructor(step) {
    this.step = step;
    this.offset = 0; // bytes received and rendered
    this.ended = false;
    this.follow = true;
    this.dropped = 0; // lines no longer in the list
    this.lines = 0; // newlines seen so far
    this.starts = new Map(); // line index → offset of its first byte, until the line is made
    this.times = []; // the step's time index: [offset, ms], in offset order
    this.root = document.createElement('div');
    this.notice = document.createElement('p');
    this.notice.className = 'dropped';
    this.notice.hidden = true;
    this.el = document.createElement('ol');
    this.el.className = 'lines';
    this.el.dataset.step = step;
    this.el.dataset.offset = '0';
    this.root.append(this.notice, this.el);
    this.term = new Terminal((i, runs) => this.line(i, runs));
  }

  line(i, runs) {
    if (this.el.children.length >= KEEP_LINES + DROP) {
      for (let k = 0; k < DROP; k++) this.el.firstElementChild.remove();
      this.dropped += DROP;
      this.el.start = this.dropped + 1;
      this.notice.hidden = false;
      this.notice.textContent = `Lines 1–${this.dropped} are not kept on this page (it keeps about the last ${KEEP_LINES.toLocaleString('en')}); the raw output has them all.`;
    }
    let li = this.el.children[i - this.dropped];
    while (!li) {
      const n = this.dropped + this.el.children.length + 1;
      li = document.createElement('li');
      li.id = `${this.step}-L${n}`;
      const a = document.createElement('a');
      a.className = 'ln';
      a.href = `#${this.step}-L${n}`;
      a.textContent = String(n);
      a.setAttribute('aria-label', `line ${n}`);
      const index = n - 1;
      li.dataset.at = String(this.starts.get(index) ?? 0);
      this.starts.delete(index);
      const time = document.createElement('time');
      time.className = 'ts';
      this.stamp(li, time);
      const text = document.createElement('span');
      text.className = 'text';
      li.append(a, time, text);
      this.el.append(li);
      if (location.hash === `#${li.id}`) {
        // The linked line has arrived: show it, and stop following the end.
        this.follow = false;
        $('#follow').checked = false;
        requestAnimationFrame(() => li.scrollIntoView({ block: 'center' }));
      }
      li = this.el.children[i - this.dropped];
    }
    const text = li.lastChild;
    text.replaceChildren(...runs.map((r) => {
      if (!r.style) return document.createTextNode(r.text);
      const span = document.createElement('span');
      span.className = r.style;
      span.textContent = r.text;
      return span;
    }));
  }

  /// Shows when a line's first byte arrived: the last time-index point at or before it, or
  /// (past the last point, while following live) now.
  stamp(li, time) {
    const at = Number(li.dataset.at);
    let lo = 0;
    let hi = this.times.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.times[mid][0] <= at) lo = mid + 1; else hi = mid;
    }
    const ms = lo > 0 && (lo < this.times.length || this.ended) ? this.times[lo - 1][1] : Date.now();
    const d = new Date(ms);
    time.dateTime = d.toISOString();
    time.textContent = d.toLocaleTimeString('en-GB', { hour12: false });
  }

  /// Fetches the step's time index and re-stamps the lines kept.
  async loadTimes() {
    const answer = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}/steps/${encodeURIComponent(this.step)}/times`);
    this.times = answer.points;
    for (const li of this.el.children) this.stamp(li, li.querySelector('time'));
  }

  /// Follows the step from `this.offset` until its end, reconnecting after a cut.
  connect() {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const url = `${proto}//${location.host}/api/v1/jobs/${encodeURIComponent(jobId)}/steps/${encodeURIComponent(this.step)}/tail?offset=${this.offset}`;
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    setStatus(`following ${this.step}`);
    ws.onmessage = (m) => {
      if (typeof m.data === 'string') {
        const end = JSON.parse(m.data);
        if (end.type === 'end') {
          this.ended = true;
          this.el.dataset.ended = end.reason || 'ended';
          if ($('#timestamps').checked) this.loadTimes().catch(() => {});
          setStatus(`${this.step} ended: ${end.reason}${end.exit_code === undefined ? '' : `, exit ${end.exit_code}`}`);
          refreshSteps().catch(() => {});
        }
        return;
      }
      const view = new DataView(m.data);
      const at = Number(view.getBigUint64(0));
      let bytes = new Uint8Array(m.data, 8);
      if (at > this.offset) {
        // A gap would be a server bug: start again from what we have.
        ws.close();
        return;
      }
      if (at < this.offset) bytes = bytes.subarray(Math.min(bytes.length, this.offset - at));
      for (let p = bytes.indexOf(10); p !== -1; p = bytes.indexOf(10, p + 1)) {
        this.lines += 1;
        this.starts.set(this.lines, this.offset + p + 1);
      }
      const atBottom = this.follow;
      this.term.write(bytes);
      this.offset += bytes.length;
      this.el.dataset.offset = String(this.offset);
      if (atBottom) this.el.lastElementChild?.scrollIntoView({ block: 'end' });
    };
    ws.onclose = () => {
      if (this.ended || current?.view !== this) return;
      setStatus(`connection lost; resuming ${this.step} from byte ${this.offset}`);
      setTimeout(() => this.connect(), 1000);
    };
  }

  close() {
    this.ended = true;
    this.ws?.close();
  }
}

function setStatus(text) {
  $('#status').textContent = text;
}

function show(step) {
  if (current?.id === step) return;
  current?.view.close();
  const view = new StepView(step);
  current = { id: step, view };
  $('#output').replaceChildren(view.root);
  $('#step-title').textContent = steps.find((s) => s.step === step)?.name || step;
  $('#raw').href = `/api/v1/jobs/${encodeURIComponent(jobId)}/steps/${encodeURIComponent(step)}/output`;
  renderSteps();
  selectTab('output');
  view.connect();
}

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

/// A link to a line (a search result, a shared URL): show it if the page keeps it.
window.addEventListener('hashchange', () => {
  const li = document.getElementById(decodeURIComponent(location.hash.slice(1)));
  if (li && current) {
    current.view.follow = false;
    $('#follow').checked = false;
    li.scrollIntoView({ block: 'center' });
  } else if (/-L\d+$/.test(location.hash)) {
    setStatus(`${location.hash.slice(1)} is before the lines this page keeps; the raw output has it`);
  }
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

$('#follow').addEventListener('change', (e) => {
  if (current) current.view.follow = e.target.checked;
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
  const wanted = decodeURIComponent(location.hash.slice(1)).replace(/-L\d+$/, '');
  const first = steps.find((s) => s.step === wanted) || steps[0];
  if (first) show(first.step);
  // Steps appear and end while the page is open.
  setInterval(() => refreshSteps().then(() => {
    if (!current && steps[0]) show(steps[0].step);
  }).catch(() => {}), 2000);
}

start();
