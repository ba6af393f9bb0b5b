// Renders a step's byte stream as a terminal would, line by line: UTF-8 decoded across chunk
// boundaries, `\r` returns to the line's start (so a progress bar redrawn in place collapses
// to its last state), `ESC[K` erases to the end of the line, SGR sets colours and styles, a few
// cursor moves within the line are honoured, everything else (OSC titles, other CSI) is
// dropped. Lines are handed to `onLine(index, line)` when they change; a line is a list of
// runs `{text, style}` where `style` is a class-name string ('' for plain).

const ESC = '\u001b';
// Characters that the slow path must see: C0 controls (ESC, \r, \b, \t, …) and DEL.
const CONTROL = /[\u0000-\u001f\u007f]/;

export class Terminal {
  constructor(onLine) {
    this.onLine = onLine;
    this.decoder = new TextDecoder('utf-8');
    this.index = 0; // the current line's number, from 0
    this.chars = []; // the current line's characters
    this.styles = []; // their styles
    this.col = 0;
    this.style = '';
    this.sgr = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };
    this.pending = ''; // an escape sequence cut by a chunk boundary
  }

  /// Feeds raw bytes (a Uint8Array); lines changed by them are reported.
  write(bytes) {
    const text = this.pending + this.decoder.decode(bytes, { stream: true });
    this.pending = '';
    let i = 0;
    let dirty = false;
    while (i < text.length) {
      const c = text[i];
      if (this.col === 0 && this.chars.length === 0 && c !== ESC) {
        // Fast path: a whole plain line (no escape or control character) is one run.
        const nl = text.indexOf('\n', i);
        if (nl !== -1) {
          const line = text.slice(i, nl);
          if (!CONTROL.test(line)) {
            this.onLine(this.index, line ? [{ text: line, style: this.style }] : []);
            this.index += 1;
            dirty = false;
            i = nl + 1;
            continue;
          }
        }
      }
      if (c === ESC) {
        const end = this.escape(text, i);
        if (end < 0) {
          this.pending = text.slice(i);
          break;
        }
        i = end;
        continue;
      }
      if (c === '\n') {
        this.emit();
        this.index += 1;
        this.chars = [];
        this.styles = [];
        this.col = 0;
        dirty = false;
      } else if (c === '\r') {
        this.col = 0;
      } else if (c === '\b') {
        this.col = Math.max(0, this.col - 1);
      } else if (c === '\t') {
        const next = (Math.floor(this.col / 8) + 1) * 8;
        while (this.col < next) this.put(' ');
        dirty = true;
      } else if (c >= ' ' || c > '\u007f') {
        this.put(c);
        dirty = true;
      }
      i += 1;
    }
    if (dirty || this.chars.length) this.emit();
  }

  put(c) {
    while (this.chars.length < this.col) {
      this.chars.push(' ');
      this.styles.push('');
    }
    this.chars[this.col] = c;
    this.styles[this.col] = this.style;
    this.col += 1;
  }

  /// Handles the escape sequence at `text[i]`; returns where it ends, or -1 if it is cut off.
  escape(text, i) {
    const kind = text[i + 1];
    if (kind === undefined) return -1;
    if (kind === '[') {
      let j = i + 2;
      while (j < text.length && !(text[j] >= '@' && text[j] <= '~')) j += 1;
      if (j >= text.length) return text.length - i > 64 ? i + 2 : -1;
      this.csi(text.slice(i + 2, j), text[j]);
      return j + 1;
    }
    if (kind === ']') {
      // OSC: up to BEL or ESC \
      for (let j = i + 2; j < text.length; j++) {
        if (text[j] === '\u0007') return j + 1;
        if (text[j] === ESC && text[j + 1] === '\\') return j + 2;
      }
      return text.length - i > 4096 ? i + 2 : -1;
    }
    return i + 2; // two-character sequences (charset selection and the like): dropped
  }

  csi(params, final) {
    const nums = params.replace(/^[?>]/, '').split(';').map((p) => (p === '' ? NaN : Number(p)));
    const n = (k, dflt) => (Number.isNaN(nums[k]) || nums[k] === undefined ? dflt : nums[k]);
    switch (final) {
      case 'm':
        this.applySgr(nums);
        break;
      case 'K': {
        const mode = n(0, 0);
        if (mode === 0) {
          this.chars.length = Math.min(this.chars.length, this.col);
          this.styles.length = this.chars.length;
        } else if (mode === 1) {
          for (let k = 0; k < Math.min(this.col + 1, this.chars.length); k++) this.chars[k] = ' ';
        } else {
          this.chars = [];
          this.styles = [];
        }
        break;
      }
      case 'G':
        this.col = Math.max(0, n(0, 1) - 1);
        break;
      case 'C':
        this.col += n(0, 1);
        break;
      case 'D':
        this.col = Math.max(0, this.col - n(0, 1));
        break;
      default:
        break; // cursor moves between lines, screen clears: not in a log
    }
  }

  applySgr(nums) {
    const s = this.sgr;
    if (nums.length === 0) nums = [0];
    for (let k = 0; k < nums.length; k++) {
      const v = Number.isNaN(nums[k]) ? 0 : nums[k];
      if (v === 0) Object.assign(s, { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false });
      else if (v === 1) s.bold = true;
      else if (v === 2) s.dim = true;
      else if (v === 3) s.italic = true;
      else if (v === 4) s.underline = true;
      else if (v === 7) s.inverse = true;
      else if (v === 22) s.bold = s.dim = false;
      else if (v === 23) s.italic = false;
      else if (v === 24) s.underline = false;
      else if (v === 27) s.inverse = false;
      else if (v >= 30 && v <= 37) s.fg = v - 30;
      else if (v >= 90 && v <= 97) s.fg = v - 90 + 8;
      else if (v === 39) s.fg = null;
      else if (v >= 40 && v <= 47) s.bg = v - 40;
      else if (v >= 100 && v <= 107) s.bg = v - 100 + 8;
      else if (v === 49) s.bg = null;
      else if ((v === 38 || v === 48) && nums[k + 1] === 5) {
        // 256 colours: the 16 base ones as classes, the rest approximated to them.
        const c = nums[k + 2] | 0;
        const base = c < 16 ? c : approx256(c);
        if (v === 38) s.fg = base; else s.bg = base;
        k += 2;
      } else if ((v === 38 || v === 48) && nums[k + 1] === 2) {
        const base = approxRgb(nums[k + 2] | 0, nums[k + 3] | 0, nums[k + 4] | 0);
        if (v === 38) s.fg = base; else s.bg = base;
        k += 4;
      }
    }
    const cls = [];
    const fg = s.inverse ? s.bg : s.fg;
    const bg = s.inverse ? s.fg : s.bg;
    if (fg !== null) cls.push(`fg${fg}`);
    if (bg !== null) cls.push(`bg${bg}`);
    if (s.inverse && fg === null) cls.push('fginv');
    if (s.inverse && bg === null) cls.push('bginv');
    if (s.bold) cls.push('b');
    if (s.dim) cls.push('dim');
    if (s.italic) cls.push('i');
    if (s.underline) cls.push('u');
    this.style = cls.join(' ');
  }

  /// Reports the current line as runs of equally styled text.
  emit() {
    const runs = [];
    let text = '';
    let style = null;
    for (let k = 0; k < this.chars.length; k++) {
      if (this.styles[k] !== style && text) {
        runs.push({ text, style });
        text = '';
      }
      style = this.styles[k];
      text += this.chars[k];
    }
    if (text) runs.push({ text, style });
    this.onLine(this.index, runs);
  }
}

/// One of the 16 base colours nearest to xterm colour `c` (16–255).
function approx256(c) {
  if (c >= 232) return c < 244 ? 8 : 15; // greys
  const i = c - 16;
  const r = Math.floor(i / 36), g = Math.floor(i / 6) % 6, b = i % 6;
  return approxRgb(r * 51, g * 51, b * 51);
}

function approxRgb(r, g, b) {
  const bright = Math.max(r, g, b) > 170 ? 8 : 0;
  const bit = (v) => (v > 90 ? 1 : 0);
  return bright + bit(r) + 2 * bit(g) + 4 * bit(b);
}
