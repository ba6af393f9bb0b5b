// The job page: the job's steps with live status, and the selected step's output followed over
// the websocket tail from byte 0, rendered by terminal.js. The token lives in an HttpOnly
// cookie (POST /ui/session); nothing here puts it in a URL.

import { Terminal } from './terminal.js';

const jobId = decodeURIComponent(location.pathname.split('/').filter(Boolean)[2] || '');
const $ = (sel) => document.querySelector(sel);

async function api(path) {
  const r = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'application/json' } });
  if (r.status === 401) throw Object.assign(new Error('sign in'), { status: 401 });
  if (!r.ok) throw new Error(`${path}: ${r.status} ${(await r.text()).trim()}`);
  return r.json();
}

function showLogin(message) {
  $('#login').hidden = false;
  $('#login-message').textContent = message || '';
  $('#token').focus();
}

$('#login').addEventListener('submit', async (e) => {
  e.preventDefault();
  const token = $('#token').value.trim();
  const r = await fetch('/ui/session', { method: 'POST', credentials: 'same-origin', headers: { Authorization: `Bearer ${token}` } });
  $('#token').value = '';
  if (!r.ok) return showLogin('That token was not accepted.');
  $('#login').hidden = true;
  start();
});

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

/// One step's output view: lines in an ordered list, each with its number as a link.
class StepView {
  constructor(step) {
    this.step = step;
    this.offset = 0; // bytes received and rendered
    this.ended = false;
    this.follow = true;
    this.el = document.createElement('ol');
    this.el.className = 'lines';
    this.el.dataset.step = step;
    this.el.dataset.offset = '0';
    this.term = new Terminal((i, runs) => this.line(i, runs));
  }

  line(i, runs) {
    let li = this.el.children[i];
    while (!li) {
      const n = this.el.children.length + 1;
      li = document.createElement('li');
      li.id = `${this.step}-L${n}`;
      const a = document.createElement('a');
      a.className = 'ln';
      a.href = `#${this.step}-L${n}`;
      a.textContent = String(n);
      a.setAttribute('aria-label', `line ${n}`);
      const text = document.createElement('span');
      text.className = 'text';
      li.append(a, text);
      this.el.append(li);
      li = this.el.children[i];
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
  $('#output').replaceChildren(view.el);
  $('#step-title').textContent = steps.find((s) => s.step === step)?.name || step;
  renderSteps();
  view.connect();
}

$('#follow').addEventListener('change', (e) => {
  if (current) current.view.follow = e.target.checked;
});

async function start() {
  try {
    const job = await api(`/api/v1/jobs/${encodeURIComponent(jobId)}`);
    $('#title').textContent = `${job.project} #${job.number}`;
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
