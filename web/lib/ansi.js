// ansi.js - turns terminal output (text with ANSI escape sequences) into
// styled segments. Pure functions, no DOM: tests/browser/unit.test.mjs runs
// them under node, and logview.js makes spans of the segments.
//
// Supported: SGR (ESC [ ... m) reset 0, bold 1, dim 2, italic 3,
// underline 4, inverse 7 and their resets 22/23/24/27, foreground 30-37,
// 90-97 and 39, background 40-47, 100-107 and 49, 256 colours (38;5;N,
// 48;5;N) and true colour (38;2;R;G;B). Every other escape sequence (cursor
// movement, erase, OSC titles and hyperlinks, charset selection) is
// removed. A sequence cut in two by a chunk boundary is kept in the state
// and completed by the next chunk, so output arriving a few bytes at a time
// renders the same as output arriving at once.

export function createAnsiState() {
  return { style: defaultStyle(), pending: "" };
}

function defaultStyle() {
  return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false };
}

// The longest unfinished escape sequence kept for the next chunk; past this
// the ESC is dropped and the rest shows as text.
const MAX_PENDING = 512;

// Feeds text; returns [{text, style}] where style is a frozen copy (or
// null for the default style). Updates state.
export function ansiFeed(state, text) {
  const out = [];
  let s = state.pending + text;
  state.pending = "";
  let i = 0;
  let start = 0;
  const emit = (end) => {
    if (end > start) {
      const t = s.slice(start, end);
      const last = out[out.length - 1];
      const st = isDefault(state.style) ? null : Object.freeze({ ...state.style });
      if (last && sameStyle(last.style, st)) last.text += t;
      else out.push({ text: t, style: st });
    }
  };
  while (i < s.length) {
    const esc = s.indexOf("\x1b", i);
    if (esc < 0) break;
    const len = escapeLength(s, esc);
    if (len === 0) {
      // Incomplete: keep it for the next chunk unless it is too long.
      if (s.length - esc <= MAX_PENDING) {
        emit(esc);
        state.pending = s.slice(esc);
        return out;
      }
      i = esc + 1; // show the rest as text
      continue;
    }
    emit(esc);
    if (s[esc + 1] === "[" && s[esc + len - 1] === "m") applySgr(state, s.slice(esc + 2, esc + len - 1));
    i = esc + len;
    start = i;
  }
  emit(s.length);
  return out;
}

// Flushes what is pending at the end of a stream (an ESC that never got
// its sequence) as segments.
export function ansiEnd(state) {
  const p = state.pending;
  state.pending = "";
  return p ? [{ text: p.replace(/\x1b/g, ""), style: isDefault(state.style) ? null : { ...state.style } }] : [];
}

// Length of the escape sequence at s[i] (an ESC), or 0 when it is not
// complete yet.
function escapeLength(s, i) {
  if (i + 1 >= s.length) return 0;
  const c = s[i + 1];
  if (c === "[") {
    // CSI: parameters 0x30-0x3F, intermediates 0x20-0x2F, final 0x40-0x7E.
    let j = i + 2;
    while (j < s.length) {
      const code = s.charCodeAt(j);
      if (code >= 0x40 && code <= 0x7e) return j - i + 1;
      if (code < 0x20 || code > 0x3f) return j - i; // malformed: drop ESC [ and params
      j++;
    }
    return 0;
  }
  if (c === "]" || c === "P" || c === "_" || c === "^" || c === "X") {
    // OSC / DCS / APC / PM / SOS: up to BEL or ESC \.
    for (let j = i + 2; j < s.length; j++) {
      if (s[j] === "\x07") return j - i + 1;
      if (s[j] === "\x1b") {
        if (j + 1 >= s.length) return 0;
        return s[j + 1] === "\\" ? j - i + 2 : j - i;
      }
    }
    return 0;
  }
  if (c === "(" || c === ")" || c === "*" || c === "+" || c === "#" || c === "%") {
    return i + 2 < s.length ? 3 : 0;
  }
  return 2; // ESC 7, ESC 8, ESC =, ESC >, ESC c, ...
}

function applySgr(state, params) {
  const st = state.style;
  const p = params === "" ? [0] : params.split(/[;:]/).map((x) => (x === "" ? 0 : Number(x)));
  for (let k = 0; k < p.length; k++) {
    const n = p[k];
    if (n === 0) Object.assign(st, defaultStyle());
    else if (n === 1) st.bold = true;
    else if (n === 2) st.dim = true;
    else if (n === 3) st.italic = true;
    else if (n === 4) st.underline = true;
    else if (n === 7) st.inverse = true;
    else if (n === 21 || n === 22) {
      st.bold = false;
      st.dim = false;
    } else if (n === 23) st.italic = false;
    else if (n === 24) st.underline = false;
    else if (n === 27) st.inverse = false;
    else if (n >= 30 && n <= 37) st.fg = n - 30;
    else if (n >= 90 && n <= 97) st.fg = n - 90 + 8;
    else if (n === 39) st.fg = null;
    else if (n >= 40 && n <= 47) st.bg = n - 40;
    else if (n >= 100 && n <= 107) st.bg = n - 100 + 8;
    else if (n === 49) st.bg = null;
    else if (n === 38 || n === 48) {
      let colour = null;
      if (p[k + 1] === 5 && k + 2 < p.length) {
        colour = clamp255(p[k + 2]);
        k += 2;
      } else if (p[k + 1] === 2 && k + 4 < p.length) {
        colour = `rgb(${clamp255(p[k + 2])}, ${clamp255(p[k + 3])}, ${clamp255(p[k + 4])})`;
        k += 4;
      } else {
        break; // malformed: ignore the rest
      }
      if (n === 38) st.fg = colour;
      else st.bg = colour;
    }
  }
}

function clamp255(x) {
  return Number.isFinite(x) ? Math.max(0, Math.min(255, Math.trunc(x))) : 0;
}

function isDefault(st) {
  return st.fg === null && st.bg === null && !st.bold && !st.dim && !st.italic && !st.underline && !st.inverse;
}

function sameStyle(a, b) {
  if (a === null || b === null) return a === b;
  return (
    a.fg === b.fg &&
    a.bg === b.bg &&
    a.bold === b.bold &&
    a.dim === b.dim &&
    a.italic === b.italic &&
    a.underline === b.underline &&
    a.inverse === b.inverse
  );
}

// The xterm colour of index 16..255 as "rgb(r, g, b)"; 0..15 are themed
// in style.css (classes fg0..fg15, bg0..bg15).
export function colour256(n) {
  if (n < 16) return null;
  if (n < 232) {
    const v = n - 16;
    const level = (x) => (x === 0 ? 0 : 55 + x * 40);
    return `rgb(${level(Math.floor(v / 36))}, ${level(Math.floor(v / 6) % 6)}, ${level(v % 6)})`;
  }
  const g = 8 + (n - 232) * 10;
  return `rgb(${g}, ${g}, ${g})`;
}

// How a segment's style is drawn: {classes: [...], color, background}
// (color/background are CSS colours for 256 and true colours, else null).
export function styleToCss(style) {
  const r = { classes: [], color: null, background: null };
  if (!style) return r;
  let fg = style.fg;
  let bg = style.bg;
  if (style.inverse) {
    [fg, bg] = [bg, fg];
    if (fg === null) r.classes.push("ansi-inv-fg");
    if (bg === null) r.classes.push("ansi-inv-bg");
  }
  const put = (c, kind) => {
    if (c === null) return;
    if (typeof c === "number" && c < 16) r.classes.push(`${kind}${c}`);
    else if (typeof c === "number") r[kind === "fg" ? "color" : "background"] = colour256(c);
    else r[kind === "fg" ? "color" : "background"] = c;
  };
  put(fg, "fg");
  put(bg, "bg");
  if (style.bold) r.classes.push("ansi-bold");
  if (style.dim) r.classes.push("ansi-dim");
  if (style.italic) r.classes.push("ansi-italic");
  if (style.underline) r.classes.push("ansi-underline");
  return r;
}
