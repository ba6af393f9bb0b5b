// One step's output on the job page, as a window of its lines: fetched by byte range as the
// reader scrolls up or down (so a step of any size costs the page a bounded number of lines),
// numbered with the server's line index, and followed live over the websocket tail once the
// window reaches the step's end. A long step opens at its end; a link to a line opens there.

import { $, api } from './common.js';
import { Terminal } from './terminal.js';

/// Bytes fetched per turn while scrolling (~3,000 lines of a typical log).
const WINDOW = 128 * 1024;
/// Lines added per turn at most (a turn of short lines holds many).
const TURN_LINES = 3000;
/// Lines the window keeps at most; past that, `DROP` at a time go from the far side.
export const KEEP_LINES = 10000;
const DROP = 1000;

export class OutputView {
  /// `scroller` is the element that scrolls; `status(text)` reports to the page.
  constructor({ job, step, length, ended, scroller, status }) {
    this.job = job;
    this.step = step;
    this.length = length || 0; // readable bytes, as last known
    this.ended = ended; // the step ended: `length` is final
    this.scroller = scroller;
    this.status = status;
    this.follow = true;
    this.lastTop = 0; // where this view last put the scroll position
    this.pinned = null; // the line jumped to, kept on screen as the lines around it are laid out
    this.times = []; // the step's time index: [offset, ms], in offset order
    this.gen = 0; // bumped by every reset; answers for an older window are dropped
    this.busy = false; // a scroll-driven fetch is in flight
    this.root = document.createElement('div');
    this.el = document.createElement('ol');
    this.el.className = 'lines';
    this.el.dataset.step = step;
    this.root.append(this.el);
    // Lines off screen count as one line high until laid out: while following, stay at the
    // end as they are.
    this.resized = new ResizeObserver(() => {
      if (this.follow) this.toBottom();
      else this.pin();
    });
    this.resized.observe(this.el);
    this.reset(0, 1);
  }

  path(rest) {
    return `/api/v1/jobs/${encodeURIComponent(this.job)}/steps/${encodeURIComponent(this.step)}${rest}`;
  }

  /// Opens the view: at a linked line, at the start of a short step, at the end of a long one.
  async open(line) {
    if (line) return this.jumpToLine(line);
    if (this.length <= WINDOW) return this.tail();
    return this.jumpToEnd();
  }

  /// Empties the window; it starts again at `offset`, the first byte of line `line`.
  reset(offset, line) {
    this.gen += 1;
    this.closeSocket();
    this.el.replaceChildren();
    this.lo = offset; // the first kept line's first byte
    this.loLine = line; // and its number
    this.restartForward(offset, line);
  }

  /// The forward edge: bytes from `offset` (line `line`'s first) go through a fresh terminal.
  restartForward(offset, line) {
    this.hi = offset; // bytes before this are rendered
    this.next = line; // the line the next byte belongs to
    this.starts = new Map([[line, offset]]); // line number → first byte, until the line is made
    const base = line;
    this.term = new Terminal((i, runs) => this.forwardLine(base + i, runs));
    this.el.dataset.offset = String(offset);
  }

  /// Renders bytes that follow `this.hi`.
  feed(bytes) {
    for (let p = bytes.indexOf(10); p !== -1; p = bytes.indexOf(10, p + 1)) {
      this.next += 1;
      this.starts.set(this.next, this.hi + p + 1);
    }
    this.term.write(bytes);
    this.hi += bytes.length;
    this.length = Math.max(this.length, this.hi);
    this.el.dataset.offset = String(this.hi);
    this.widen();
    if (this.el.children.length > KEEP_LINES + DROP) this.dropTop(this.el.children.length - KEEP_LINES);
  }

  forwardLine(n, runs) {
    let li = this.el.children[n - this.loLine];
    if (!li) {
      li = this.makeLine(n, this.starts.get(n) ?? this.hi);
      this.starts.delete(n);
      this.el.append(li);
    }
    fill(li, runs);
  }

  makeLine(n, at) {
    const li = document.createElement('li');
    li.id = `${this.step}-L${n}`;
    li.dataset.at = String(at);
    const a = document.createElement('a');
    a.className = 'ln';
    a.href = `#${li.id}`;
    a.textContent = String(n);
    a.setAttribute('aria-label', `line ${n}`);
    a.tabIndex = -1; // thousands of lines are not tab stops: the output scrolls by keyboard
    const time = document.createElement('time');
    time.className = 'ts';
    const text = document.createElement('span');
    text.className = 'text';
    li.append(a, time, text);
    if (this.stamped) this.stamp(li, time);
    return li;
  }

  /// Drops `k` lines from the top, keeping what is on screen where it is.
  dropTop(k) {
    const before = this.scroller.scrollHeight;
    for (let i = 0; i < k && this.el.children.length > 1; i++) {
      this.el.firstElementChild.remove();
      this.loLine += 1;
    }
    this.lo = Number(this.el.firstElementChild.dataset.at);
    this.setTop(this.scroller.scrollTop - (this.follow ? 0 : before - this.scroller.scrollHeight));
  }

  /// Drops `k` lines from the bottom: the forward edge moves back to the first one dropped (and
  /// stops following live, if it was).
  dropBottom(k) {
    let first = null;
    for (let i = 0; i < k && this.el.children.length > 1; i++) {
      first = this.el.lastElementChild;
      first.remove();
    }
    if (!first) return;
    this.closeSocket();
    this.restartForward(Number(first.dataset.at), Number(first.querySelector('a.ln').textContent));
  }

  /// Bytes `[from, to)` of the step (fewer at its end; none past it).
  async range(from, to) {
    const r = await fetch(this.path('/output'), { credentials: 'same-origin', headers: { Range: `bytes=${from}-${to - 1}` } });
    if (r.status === 416) return new Uint8Array(0);
    if (!r.ok) throw new Error(`output ${from}-${to}: ${r.status} ${(await r.text()).trim()}`);
    const total = (r.headers.get('content-range') || '').split('/')[1];
    if (total && total !== '*') {
      this.length = Number(total);
      this.ended = true;
    }
    return new Uint8Array(await r.arrayBuffer());
  }

  /// Extends the window downwards by a turn; at the step's end, follows it live.
  async forward() {
    if (this.live) return;
    const [gen, hi] = [this.gen, this.hi];
    const bytes = await this.range(hi, hi + WINDOW);
    // Another turn (or a jump) moved the edge meanwhile: this answer is stale.
    if (gen !== this.gen || hi !== this.hi || this.live) return;
    const fed = headLines(bytes, bytes.length < WINDOW);
    this.feed(fed);
    if ((fed.length === bytes.length && bytes.length < WINDOW) || this.hi >= this.length) this.tail();
  }

  /// Extends the window upwards by a turn of whole lines, keeping what is on screen in place.
  async backward() {
    if (this.lo === 0) return;
    const [gen, lo] = [this.gen, this.lo];
    const from = Math.max(0, lo - WINDOW);
    const bytes = await this.range(from, lo);
    if (gen !== this.gen || lo !== this.lo || !bytes.length) return;
    const part = bytes.subarray(tailStart(bytes, from === 0));
    const start = from + (bytes.length - part.length);
    const newlines = [];
    for (let p = part.indexOf(10); p !== -1; p = part.indexOf(10, p + 1)) newlines.push(p + 1);
    // A piece after the last newline continues the window's first line: it shares its number.
    const first = this.loLine - newlines.length;
    const lis = [];
    const term = new Terminal((i, runs) => {
      lis[i] ??= this.makeLine(first + i, start + (i === 0 ? 0 : newlines[i - 1]));
      fill(lis[i], runs);
    });
    term.write(part);
    const before = this.scroller.scrollHeight;
    this.el.prepend(...lis);
    this.setTop(this.scroller.scrollTop + this.scroller.scrollHeight - before);
    this.widen();
    this.lo = start;
    this.loLine = first;
    if (this.el.children.length > KEEP_LINES + DROP) this.dropBottom(this.el.children.length - KEEP_LINES);
  }

  /// Runs a scroll-driven fetch unless one is in flight.
  async load(what) {
    if (this.busy) return;
    this.busy = true;
    try {
      await what();
    } catch (e) {
      this.status(e.message);
    } finally {
      this.busy = false;
    }
  }

  /// Called on every scroll of the output: fetches more when near either edge, stops following
  /// when the reader scrolls away from the end.
  onScroll() {
    const s = this.scroller;
    const below = s.scrollHeight - s.scrollTop - s.clientHeight;
    // Moved by the reader (this view records where it puts the position itself): a line
    // jumped to is no longer held in place, and scrolling up stops following.
    if (Math.abs(s.scrollTop - this.lastTop) > 4) this.pinned = null;
    if (this.follow && this.live && s.scrollTop < this.lastTop - 4) this.setFollow(false);
    this.lastTop = s.scrollTop;
    if (s.scrollTop < s.clientHeight && this.lo > 0) this.load(() => this.backward());
    else if (below < s.clientHeight && !this.live) this.load(() => this.forward());
  }

  setFollow(on) {
    this.follow = on;
    $('#follow').checked = on;
  }

  /// Where the screen's first line is, as a fraction of the output.
  position() {
    const s = this.scroller;
    if (!this.length) return 1;
    const shown = s.scrollHeight ? s.scrollTop / s.scrollHeight : 0;
    return Math.min(1, (this.lo + shown * (this.hi - this.lo)) / this.length);
  }

  /// Shows line `n` (from 1) in the middle of the screen, fetching the lines around it.
  async jumpToLine(n) {
    const shown = document.getElementById(`${this.step}-L${n}`);
    this.setFollow(false);
    if (!shown) {
      const r = await fetch(this.path(`/output?lines=${n}`), { credentials: 'same-origin' });
      if (r.status === 416) {
        this.status(`line ${n} is not in this step's output${this.ended ? '' : ' yet'}`);
        return;
      }
      if (!r.ok) throw new Error(`line ${n}: ${r.status} ${(await r.text()).trim()}`);
      const at = Number(r.headers.get('tailrace-offset'));
      await r.body?.cancel();
      this.reset(at, n);
      await this.forward();
      await this.backward();
    }
    this.pinned = document.getElementById(`${this.step}-L${n}`);
    this.pin();
  }

  /// Fetches a turn from `from` and restarts the window at the line start `pick(bytes)` says,
  /// numbered by the server; the turn's bytes from there, or `null` if a jump came meanwhile.
  async restartAt(from, pick) {
    const gen = this.gen;
    const bytes = await this.range(from, from + WINDOW);
    if (gen !== this.gen) return null;
    const skip = pick(bytes);
    const { line } = await api(this.path(`/line-number?offset=${from + skip}`));
    if (gen !== this.gen) return null;
    this.reset(from + skip, line);
    return { rest: bytes.subarray(skip), atEnd: bytes.length < WINDOW };
  }

  /// Opens the window at the line holding byte `offset`.
  async jumpToOffset(offset) {
    const turn = await this.restartAt(offset, (bytes) => (offset > 0 ? firstLineStart(bytes) : 0));
    if (!turn) return;
    const fed = headLines(turn.rest, turn.atEnd);
    this.feed(fed);
    this.setTop(0);
    if ((fed.length === turn.rest.length && turn.atEnd) || this.hi >= this.length) this.tail();
  }

  /// Opens the window on the step's last lines and follows it.
  async jumpToEnd() {
    this.setFollow(true);
    if (this.length <= WINDOW) {
      this.reset(0, 1);
    } else {
      const turn = await this.restartAt(this.length - WINDOW, (bytes) => tailStart(bytes, false));
      if (!turn) return;
      this.feed(turn.rest);
    }
    this.tail();
    this.toBottom();
  }

  /// Scrolls to the last line.
  toBottom() {
    this.setTop(this.scroller.scrollHeight);
  }

  /// Puts the line jumped to in the middle of the screen.
  pin() {
    if (!this.pinned?.isConnected) return;
    this.pinned.scrollIntoView({ block: 'center' });
    this.lastTop = this.scroller.scrollTop;
  }

  /// Sets the scroll position, remembering it (to tell the reader's scrolling from this view's).
  setTop(top) {
    this.scroller.scrollTop = top;
    this.lastTop = this.scroller.scrollTop;
  }

  /// Makes the line-number column as wide as the largest number held.
  widen() {
    this.el.style.setProperty('--digits', String(Math.max(4, String(this.next).length)));
  }

  /// Follows the step live from `this.hi` over the websocket tail, resuming after a cut.
  tail() {
    if (this.live && this.ws) return;
    this.live = true;
    const gen = this.gen;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${location.host}${this.path(`/tail?offset=${this.hi}`)}`);
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    if (!this.ended) this.status(`following ${this.step}`);
    ws.onmessage = (m) => {
      if (gen !== this.gen || this.ws !== ws) return;
      if (typeof m.data === 'string') {
        const end = JSON.parse(m.data);
        if (end.type === 'end') {
          this.ended = true;
          this.el.dataset.ended = end.reason || 'ended';
          this.onEnd?.(end);
        }
        return;
      }
      const at = Number(new DataView(m.data).getBigUint64(0));
      let bytes = new Uint8Array(m.data, 8);
      if (at > this.hi) {
        ws.close(); // a gap would be a server bug: start again from what we have
        return;
      }
      if (at < this.hi) bytes = bytes.subarray(Math.min(bytes.length, this.hi - at));
      this.feed(bytes);
      if (this.follow) this.toBottom();
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.closed || this.el.dataset.ended) return;
      this.ws = null;
      this.status(`connection lost; resuming ${this.step} from byte ${this.hi}`);
      setTimeout(() => {
        if (this.live && !this.ws && gen === this.gen) this.tail();
      }, 1000);
    };
  }

  closeSocket() {
    this.live = false;
    const ws = this.ws;
    this.ws = null;
    ws?.close();
  }

  close() {
    this.closed = true;
    this.resized.disconnect();
    this.gen += 1;
    this.closeSocket();
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
    const two = (v) => String(v).padStart(2, '0');
    time.dateTime = d.toISOString();
    time.textContent = `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
  }

  /// Fetches the step's time index and re-stamps the lines kept; lines made from now on are
  /// stamped as they are made.
  async loadTimes() {
    const answer = await api(this.path('/times'));
    this.times = answer.points;
    this.stamped = true;
    for (const li of this.el.children) this.stamp(li, li.querySelector('time'));
  }
}

/// Of bytes that start at a line's start: the first `TURN_LINES` whole lines (all the bytes at
/// the step's end, or when they hold no newline at all), so that a window shows no half line at
/// its lower edge.
function headLines(bytes, atEnd) {
  let p = -1;
  for (let k = 0; k < TURN_LINES; k++) {
    const q = bytes.indexOf(10, p + 1);
    if (q === -1) return atEnd || p === -1 ? bytes : bytes.subarray(0, p + 1);
    p = q;
  }
  return bytes.subarray(0, p + 1);
}

/// Of bytes that end where a line starts (or at the step's end): where their last `TURN_LINES`
/// lines start. Fewer lines: all of them if the bytes begin the step, else those after the first
/// newline (a turn that is all one line is kept whole, as a piece of that line).
function tailStart(bytes, atStepStart) {
  let p = bytes.length - 1; // a newline here ends the last line; no line starts after it
  for (let k = 0; k < TURN_LINES; k++) {
    p = p > 0 ? bytes.lastIndexOf(10, p - 1) : -1;
    if (p === -1) break;
  }
  if (p !== -1) return p + 1;
  return atStepStart ? 0 : firstLineStart(bytes);
}

/// Where the first whole line of bytes that may start mid-line begins: after the first newline
/// (0 when the bytes are all one line, kept whole as a piece of it).
function firstLineStart(bytes) {
  const nl = bytes.indexOf(10);
  return nl === -1 || nl + 1 === bytes.length ? 0 : nl + 1;
}

/// A line's text as runs of styled spans.
function fill(li, runs) {
  li.lastChild.replaceChildren(...runs.map((r) => {
    if (!r.style) return document.createTextNode(r.text);
    const span = document.createElement('span');
    span.className = r.style;
    span.textContent = r.text;
    return span;
  }));
}
