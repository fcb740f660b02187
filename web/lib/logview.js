// logview.js - the log viewer of the build page.
//
// A step's log can be hundreds of megabytes, so the page never holds all of
// it: it shows a window [lo, hi) of the log's bytes, fetched with Range
// requests. It opens on the last TAIL bytes ("bytes=-N"), grows backwards
// by EARLIER bytes per "Load earlier", can jump to the start (then grows
// forwards with "Load later") and back to the end. While the step runs and
// the window reaches the end of the log, it is "following": it subscribes
// to log:BUILD:STEP on the live feed and appends each event's bytes at
// their offset (overlap is cut off, a gap is fetched by range), so output
// shows within milliseconds of reaching the master. At most MAX_LOADED
// bytes stay in the page; older blocks are dropped as new ones arrive.
//
// Bytes are decoded as UTF-8 with replacement characters (a log need not
// be UTF-8) by one streaming TextDecoder per contiguous run, and ANSI
// colours become spans (ansi.js); text is only ever inserted as text
// nodes, so a log holding "<script>" shows exactly that.
//
// Every change of the window goes through one promise chain (this.chain),
// so a live event can never be applied in the middle of a range fetch.
//
// Lines: each line of the log is one element with its number in a gutter
// (drawn from data-n by CSS, so copying text copies no numbers). Numbers
// are the line's place in the whole log, not in the window: a window that
// starts at byte 0 starts at line 1, a window that ends at the log's end
// counts back from the newlines the master reports (X-Log-Lines), and
// windows grow from there. A block of the window always starts at a line
// start, so a line never straddles two blocks. Clicking a number selects
// that line (shift-click: a range) and tells the page (onSelect), which
// puts it into the address (#/builds/B/steps/S/L120-L140); reveal(a, b)
// loads the part of the log holding lines a..b, highlights them and
// scrolls to them.
//
// Errors: a line matching the builder's error patterns (errors.js) is
// marked when it is complete; "First error" looks in the whole log when it
// is small enough to load (WHOLE_MAX), else in the loaded part and says
// so; "Next error" and "Previous error" go from there.

import { ansiFeed, createAnsiState, styleToCss } from "./ansi.js";
import { getRange, apiUrl } from "./api.js";
import { h } from "./dom.js";
import { errorMatcher } from "./errors.js";
import { fmtBytes, fmtInt } from "./format.js";
import { live } from "./live.js";

export const TAIL = 64 * 1024;
export const EARLIER = 256 * 1024;
export const LATER = 256 * 1024;
export const MAX_LOADED = 16 * 1024 * 1024;
const BLOCK_MAX = 1024 * 1024;
// A gap bigger than this while following is not fetched: the viewer jumps
// to the end instead (the user was not going to read it all live).
const MAX_GAP = 4 * 1024 * 1024;
const MAX_HITS = 5000;
// "First error" loads a log up to this size whole to find the first one.
export const WHOLE_MAX = 4 * 1024 * 1024;

const NL = 10;

// Writes decoded text into line elements: the current (unfinished) line
// goes on growing until its newline comes. One writer per contiguous run
// of the log; its container moves to a new block only between lines.
class LineWriter {
  constructor(container, firstNo, ansi, decoder, isError, onError) {
    this.container = container;
    this.nextNo = firstNo; // null: numbers unknown
    this.ansi = ansi;
    this.decoder = decoder;
    this.isError = isError;
    this.onError = onError;
    this.cur = null; // the unfinished line element
    this.curText = "";
    this.count = 0; // line elements made
  }

  startLine() {
    const n = h("span", { class: "ln" });
    if (this.nextNo !== null) n.dataset.n = this.nextNo;
    this.cur = h("div", { class: "ll" }, n);
    this.curText = "";
    if (this.nextNo !== null) this.nextNo++;
    this.count++;
    this.container.appendChild(this.cur);
  }

  endLine() {
    if (!this.cur) this.startLine();
    if (this.isError(this.curText)) {
      this.cur.classList.add("err");
      if (this.onError) this.onError(this.cur);
    }
    this.cur = null;
    this.curText = "";
  }

  // Also marks the unfinished last line when it looks like an error
  // (a log that ends without a newline).
  checkOpenLine() {
    if (this.cur && this.isError(this.curText) && !this.cur.classList.contains("err")) {
      this.cur.classList.add("err");
      if (this.onError) this.onError(this.cur);
    }
  }

  write(bytes, stream = true) {
    this.writeText(this.decoder.decode(bytes, { stream }));
  }

  writeText(text) {
    if (!text) return;
    for (const seg of ansiFeed(this.ansi, text.replace(/\r\n/g, "\n"))) {
      const pieces = seg.text.split("\n");
      for (let i = 0; i < pieces.length; i++) {
        const piece = pieces[i];
        if (piece) {
          if (!this.cur) this.startLine();
          this.cur.appendChild(styled(seg.style, piece));
          if (this.curText.length < 4096) this.curText += piece;
        }
        if (i < pieces.length - 1) this.endLine();
      }
    }
  }

  get atLineStart() {
    return this.cur === null;
  }
}

function styled(style, text) {
  if (!style) return document.createTextNode(text);
  const css = styleToCss(style);
  const span = document.createElement("span");
  if (css.classes.length) span.className = css.classes.join(" ");
  if (css.color) span.style.color = css.color;
  if (css.background) span.style.backgroundColor = css.background;
  span.textContent = text;
  return span;
}

function countNewlines(bytes) {
  let n = 0;
  for (let i = bytes.indexOf(NL); i >= 0; i = bytes.indexOf(NL, i + 1)) n++;
  return n;
}

export class LogViewer {
  // buildId, step: which log; size: its size as last seen (log.bytes);
  // running: whether the step still runs (then the viewer follows it).
  // onSize(size) is told when the log is seen to grow; onSelect(a, b)
  // when the user selects lines a..b (or null: none); errorPatterns: the
  // builder's (null: the defaults of errors.js).
  constructor({ buildId, step, size, running, stepName, onSize, onSelect, errorPatterns, failed }) {
    this.onSize = onSize || null;
    this.onSelect = onSelect || null;
    this.lastToldSize = -1;
    this.buildId = buildId;
    this.step = step;
    this.size = size || 0;
    this.running = !!running;
    this.failed = !!failed;
    this.isError = errorMatcher(errorPatterns);
    this.path = `/builds/${buildId}/steps/${step}/log`;
    this.blocks = [];
    this.lo = 0;
    this.hi = 0;
    this.firstLine = null; // the number of the window's first line
    this.writer = null;
    this.following = false;
    this.fetched = 0;
    this.requests = 0;
    this.chain = Promise.resolve();
    this.unsub = null;
    this.destroyed = false;
    this.hits = [];
    this.hit = -1;
    this.selection = null; // [a, b]
    this.anchor = null;
    this.errorEl = null; // the error line shown last
    this.errCount = 0; // error lines loaded
    this.countError = () => this.errCount++;
    this.build(stepName);
  }

  build(stepName) {
    this.info = h("span", { class: "log-info" });
    this.btnEarlier = h("button", { type: "button", onclick: () => this.enqueue(() => this.loadEarlier()) }, "Load earlier");
    this.btnStart = h("button", { type: "button", onclick: () => this.enqueue(() => this.jumpToStart()) }, "Jump to start");
    this.btnLater = h("button", { type: "button", onclick: () => this.enqueue(() => this.loadLater()) }, "Load later");
    this.btnEnd = h("button", { type: "button", onclick: () => this.enqueue(() => this.jumpToEnd()) }, "Jump to end");
    this.btnFirstErr = h("button", { type: "button", class: "err-first", title: "the first line matching the error patterns", onclick: () => this.enqueue(() => this.firstError()) }, "First error");
    this.btnPrevErr = h("button", { type: "button", class: "err-prev", title: "previous error line", "aria-label": "previous error", onclick: () => this.enqueue(() => this.nextError(-1)) }, "◀ error");
    this.btnNextErr = h("button", { type: "button", class: "err-next", title: "next error line", "aria-label": "next error", onclick: () => this.enqueue(() => this.nextError(1)) }, "error ▶");
    this.errInfo = h("span", { class: "log-errors" });
    this.search = h("input", {
      type: "search",
      placeholder: "search the loaded part",
      "aria-label": "search the loaded part of the log",
      class: "log-search",
      onkeydown: (e) => {
        if (e.key === "Enter") {
          e.preventDefault();
          if (this.hits.length && this.lastQuery === this.search.value) this.nextHit(e.shiftKey ? -1 : 1);
          else this.find(this.search.value);
        }
      },
    });
    this.hitInfo = h("span", { class: "log-hits" });
    const raw = h(
      "a",
      { href: apiUrl(this.path), download: `build-${this.buildId}-step-${this.step}.log`, class: "log-raw" },
      "raw log",
    );
    this.pre = h("pre", { class: "log", tabindex: "0", "aria-label": stepName ? `log of ${stepName}` : `log of step ${this.step}` });
    this.pre.addEventListener("click", (e) => {
      const ln = e.target.closest ? e.target.closest(".ln") : null;
      if (!ln || !ln.dataset.n) return;
      e.preventDefault();
      this.clickLine(Number(ln.dataset.n), e.shiftKey);
    });
    this.status = h("div", { class: "log-status", role: "status" });
    this.el = h(
      "div",
      { class: "logview", dataset: { build: this.buildId, step: this.step } },
      h(
        "div",
        { class: "logbar" },
        h("strong", null, stepName ? `log of ${stepName}` : `log of step ${this.step}`),
        this.info,
        h("span", { class: "log-buttons" }, this.btnEarlier, this.btnStart, this.btnLater, this.btnEnd),
        h("span", { class: "log-errbtns" }, this.btnFirstErr, this.btnPrevErr, this.btnNextErr, this.errInfo),
        h(
          "span",
          { class: "log-find" },
          this.search,
          h("button", { type: "button", onclick: () => this.find(this.search.value) }, "Find"),
          h("button", { type: "button", title: "previous match", "aria-label": "previous match", onclick: () => this.nextHit(-1) }, "↑"),
          h("button", { type: "button", title: "next match", "aria-label": "next match", onclick: () => this.nextHit(1) }, "↓"),
          this.hitInfo,
        ),
        raw,
      ),
      this.pre,
      this.status,
    );
  }

  // Loads the tail and, when the step runs, follows it; a failed step
  // opens on the first error of the tail. Returns a promise settled when
  // the first view is on screen.
  start() {
    if (this.running) this.follow();
    return this.enqueue(async () => {
      await this.jumpToEnd();
      if (this.failed && !this.running && !this.selection) this.showError(this.pre.querySelector(".ll.err"), false, false);
    });
  }

  destroy() {
    this.destroyed = true;
    if (this.unsub) this.unsub();
    this.unsub = null;
  }

  // The step finished: fetch whatever is left, then stop listening.
  setRunning(running, size) {
    if (size !== undefined && size > this.size) this.size = size;
    if (this.running === running) return;
    this.running = running;
    if (running) this.follow();
    else {
      this.enqueue(async () => {
        if (this.following && this.hi < this.size) await this.catchUp();
        if (this.unsub) this.unsub();
        this.unsub = null;
        if (this.writer) this.writer.checkOpenLine();
        this.refresh();
      });
    }
  }

  follow() {
    if (this.unsub) return;
    const topic = `log:${this.buildId}:${this.step}`;
    this.unsub = live.subscribe(topic, (ev) => {
      if (ev.type === "log") {
        const bytes = base64Bytes(ev.data);
        this.enqueue(() => this.onLive(ev.offset, bytes));
      } else if (ev.type === "overflow" || ev.type === "reconnected") {
        // Events were dropped: refetch from where the window ends.
        this.enqueue(() => this.refreshSize().then(() => this.catchUp()));
      }
    });
    this.liveReady = live.ready(topic);
  }

  enqueue(fn) {
    const p = this.chain.then(() => (this.destroyed ? null : fn()));
    this.chain = p.catch((e) => this.showFailure(e));
    return this.chain;
  }

  showFailure(e) {
    if (!this.destroyed) this.status.textContent = `could not load the log: ${e.message}`;
  }

  // --- fetching ---

  async fetch(range) {
    const r = await getRange(this.path, range);
    this.fetched += r.bytes.length;
    this.requests++;
    if (r.size > this.size) this.size = r.size;
    if (r.lines !== null && r.end >= r.size) this.totalLines = r.lines + (r.bytes.length && r.bytes[r.bytes.length - 1] !== NL ? 1 : 0);
    return r;
  }

  async refreshSize() {
    // A one-byte range answers the size in Content-Range.
    if (this.size === 0) return;
    await this.fetch(`bytes=${this.size - 1}-${this.size - 1}`);
  }

  clear() {
    this.pre.replaceChildren();
    this.blocks = [];
    this.writer = null;
    this.hits = [];
    this.hit = -1;
    this.hitInfo.textContent = "";
    this.errorEl = null;
    this.errCount = 0;
  }

  // Starts the window at byte lo, whose line number is firstLine (null:
  // unknown).
  reset(lo, firstLine) {
    this.clear();
    this.lo = this.hi = lo;
    this.firstLine = firstLine;
    this.newBlock(firstLine);
  }

  async jumpToEnd() {
    if (this.liveReady) await this.liveReady;
    let r = null;
    if (this.size > 0) r = await this.fetch(`bytes=-${TAIL}`);
    if (r) {
      const skip = r.start > 0 ? afterFirstNewline(r.bytes) : 0;
      const body = r.bytes.subarray(skip);
      let first = null;
      if (r.start + skip === 0) first = 1;
      else if (r.lines !== null && r.end === r.size) first = r.lines - countNewlines(body) + 1;
      this.reset(r.start + skip, first);
      this.appendBytes(body);
    } else {
      this.reset(0, 1);
    }
    this.following = true;
    this.refresh();
    this.applySelection(false);
    this.pre.scrollTop = this.pre.scrollHeight;
  }

  async jumpToStart() {
    const r = await this.fetch(`bytes=0-${LATER - 1}`);
    this.reset(0, 1);
    this.appendBytes(r.bytes);
    this.following = this.hi >= this.size;
    this.refresh();
    this.applySelection(false);
    this.pre.scrollTop = 0;
  }

  // The whole log (at most WHOLE_MAX bytes) in one request.
  async loadWhole() {
    const r = await this.fetch(`bytes=0-${Math.max(0, this.size - 1)}`);
    this.reset(0, 1);
    this.appendBytes(r.bytes);
    this.following = this.hi >= this.size;
    this.refresh();
    this.applySelection(false);
  }

  async loadLater() {
    if (this.hi >= this.size) return;
    const r = await this.fetch(`bytes=${this.hi}-${Math.min(this.size, this.hi + LATER) - 1}`);
    if (r.start !== this.hi) return;
    this.appendBytes(r.bytes);
    this.following = this.hi >= this.size;
    this.refresh();
    this.applySelection(false);
  }

  async loadEarlier() {
    if (this.lo <= 0) return false;
    if (this.hi - this.lo >= MAX_LOADED) {
      this.status.textContent = `${fmtBytes(MAX_LOADED)} are loaded, the most this page holds: use "Jump to start"`;
      return false;
    }
    const a = Math.max(0, this.lo - EARLIER);
    const r = await this.fetch(`bytes=${a}-${this.lo - 1}`);
    const skip = a > 0 ? afterFirstNewline(r.bytes) : 0;
    const body = r.bytes.subarray(skip);
    const nl = countNewlines(body);
    let first = this.firstLine !== null ? this.firstLine - nl : null;
    if (first === null && a === 0) {
      // Reaching the start tells every line's number.
      first = 1;
      this.renumber(1 + nl);
    }
    const el = h("div", { class: "log-block" });
    const before = this.pre.scrollHeight;
    const top = this.pre.scrollTop;
    const w = new LineWriter(el, first, createAnsiState(), new TextDecoder("utf-8"), this.isError, this.countError);
    w.write(body, false);
    this.pre.insertBefore(el, this.pre.firstChild);
    this.blocks.unshift({ lo: a + skip, hi: this.lo, el, lines: w.count });
    this.lo = a + skip;
    this.firstLine = first;
    this.pre.scrollTop = top + (this.pre.scrollHeight - before);
    this.refresh();
    this.applySelection(false);
    return true;
  }

  // Numbers the loaded lines from n on (once the start is known).
  renumber(n) {
    for (const ln of this.pre.querySelectorAll(".ln")) ln.dataset.n = n++;
    if (this.writer) this.writer.nextNo = n;
  }

  // Brings the window up to the log's end (after a gap or an overflow).
  async catchUp() {
    if (!this.following) return;
    if (this.size - this.hi > MAX_GAP) {
      await this.jumpToEnd();
      return;
    }
    while (this.hi < this.size) {
      const r = await this.fetch(`bytes=${this.hi}-${Math.min(this.size, this.hi + LATER) - 1}`);
      if (r.start !== this.hi || r.bytes.length === 0) break;
      this.appendBytes(r.bytes);
    }
    this.refresh();
  }

  async onLive(offset, bytes) {
    const end = offset + bytes.length;
    if (end > this.size) this.size = end;
    if (!this.following) {
      this.refresh();
      return;
    }
    if (end <= this.hi) return; // already shown
    if (offset > this.hi) {
      await this.catchUp(); // fetch the gap (it includes these bytes)
      return;
    }
    this.appendBytes(bytes.subarray(this.hi - offset));
    this.refresh();
  }

  // --- rendering ---

  newBlock(firstNo) {
    const block = { lo: this.hi, hi: this.hi, el: h("div", { class: "log-block" }), lines: 0 };
    if (this.writer) {
      // A new block continues the stream of the previous one.
      this.writer.container = block.el;
    } else {
      this.writer = new LineWriter(block.el, firstNo, createAnsiState(), new TextDecoder("utf-8"), this.isError, this.countError);
    }
    block.linesAtStart = this.writer.count;
    this.blocks.push(block);
    this.pre.appendChild(block.el);
    return block;
  }

  // Appends bytes at hi to the streaming (last) block.
  appendBytes(bytes) {
    if (!bytes.length) return;
    let block = this.blocks[this.blocks.length - 1] || this.newBlock(this.firstLine);
    // Blocks change only between lines, so a line never spans two.
    if (block.hi - block.lo >= BLOCK_MAX && this.writer.atLineStart) {
      block.lines = this.writer.count - block.linesAtStart;
      block = this.newBlock(null);
    }
    const atBottom = this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < 40;
    this.writer.write(bytes);
    block.hi += bytes.length;
    this.hi += bytes.length;
    block.lines = this.writer.count - block.linesAtStart;
    this.trim();
    if (atBottom && !this.selection) this.pre.scrollTop = this.pre.scrollHeight;
  }

  // Drops the oldest blocks while more than MAX_LOADED bytes are loaded.
  trim() {
    while (this.blocks.length > 1 && this.hi - this.blocks[0].hi >= MAX_LOADED) {
      const b = this.blocks.shift();
      this.errCount -= b.el.querySelectorAll(".ll.err").length;
      b.el.remove();
      this.lo = this.blocks[0].lo;
      if (this.firstLine !== null) this.firstLine += b.lines;
    }
  }

  // The number after the last loaded line (null: unknown).
  get endLine() {
    if (this.firstLine === null) return null;
    let n = this.firstLine;
    for (const b of this.blocks) n += b.lines;
    return n;
  }

  refresh() {
    const loaded = this.hi - this.lo;
    const lines = this.endLine !== null && this.hi > this.lo ? `, lines ${fmtInt(this.firstLine)}–${fmtInt(this.endLine - 1)}` : "";
    this.info.textContent =
      this.size === 0
        ? "empty"
        : `bytes ${fmtInt(this.lo)}–${fmtInt(this.hi)} of ${fmtInt(this.size)}${lines} (${fmtBytes(loaded)} loaded)`;
    this.btnEarlier.disabled = this.lo <= 0;
    this.btnStart.disabled = this.lo <= 0;
    this.btnLater.disabled = this.hi >= this.size;
    this.btnEnd.disabled = this.hi >= this.size && this.following;
    const errs = this.errCount;
    const whole = this.lo === 0 && this.hi >= this.size;
    this.errInfo.textContent = errs ? `${errs}${whole ? "" : "+"} error line${errs === 1 ? "" : "s"}` : whole ? "no error line" : "";
    this.btnPrevErr.disabled = this.btnNextErr.disabled = errs === 0;
    this.btnFirstErr.disabled = this.size === 0;
    if (!this.statusLocked) {
      this.status.textContent = this.running
        ? this.following
          ? "following the output live"
          : "the step is running; jump to the end to follow it"
        : "";
    }
    if (this.onSize && this.size !== this.lastToldSize) {
      this.lastToldSize = this.size;
      this.onSize(this.size);
    }
    const d = this.el.dataset;
    d.lo = this.lo;
    d.hi = this.hi;
    d.size = this.size;
    d.fetched = this.fetched;
    d.requests = this.requests;
    d.following = this.following ? "1" : "0";
    d.firstLine = this.firstLine === null ? "" : this.firstLine;
    d.errors = errs;
  }

  say(text) {
    this.status.textContent = text;
    this.statusLocked = !!text;
  }

  // --- lines: selection and links ---

  lineEl(n) {
    return this.pre.querySelector(`.ln[data-n="${n}"]`)?.parentElement || null;
  }

  clickLine(n, extend) {
    let a = n;
    let b = n;
    if (extend && this.anchor !== null) {
      a = Math.min(this.anchor, n);
      b = Math.max(this.anchor, n);
    } else {
      this.anchor = n;
    }
    this.selection = [a, b];
    this.applySelection(false);
    if (this.onSelect) this.onSelect(a, b);
  }

  // Marks the selected lines; scroll: also bring the first into view.
  applySelection(scroll) {
    for (const el of this.pre.querySelectorAll(".ll.sel")) el.classList.remove("sel");
    if (!this.selection) return null;
    const [a, b] = this.selection;
    let first = null;
    const lo = this.firstLine;
    if (lo === null) return null;
    const lines = this.pre.querySelectorAll(".ll");
    for (let n = Math.max(a, lo); n <= b && n - lo < lines.length; n++) {
      const el = lines[n - lo];
      el.classList.add("sel");
      if (!first) first = el;
    }
    if (first && scroll) this.scrollToLine(first);
    this.el.dataset.selected = first ? `${a}-${b}` : "";
    return first;
  }

  scrollToLine(el, moveWindow = true) {
    // Within the log box, a quarter down from its top; and the box itself
    // onto the screen when it is not.
    this.pre.scrollTop = Math.max(0, el.offsetTop - this.pre.clientHeight / 4);
    if (!moveWindow) return;
    const r = this.pre.getBoundingClientRect();
    if (r.top < 0 || r.top > window.innerHeight - 80) this.pre.scrollIntoView({ block: "start" });
  }

  // Loads what holds lines a..b (as far as MAX_LOADED allows), selects and
  // shows them. Resolves to whether they are on screen.
  reveal(a, b) {
    this.selection = [a, b];
    this.anchor = a;
    return this.enqueue(async () => {
      this.say("");
      await this.loadLines(a, b);
      const el = this.applySelection(true);
      if (!el) {
        const total = this.totalLines;
        this.say(
          total !== undefined && a > total
            ? `no line ${a}: this log has ${fmtInt(total)} lines`
            : `line ${a} is not in the ${fmtBytes(MAX_LOADED)} this page can hold; download the raw log to see it`,
        );
      }
      this.refresh();
      return !!el;
    });
  }

  // Grows or moves the window until it holds line a (and b where it can).
  async loadLines(a, b) {
    const have = () => this.firstLine !== null && a >= this.firstLine && b < this.endLine;
    if (have()) return;
    if (this.firstLine !== null && a >= this.firstLine) {
      // Later than what is loaded: forwards.
      while (!have() && this.hi < this.size && this.hi - this.lo < MAX_LOADED) await this.loadLater();
      return;
    }
    // Earlier: from the start, or backwards from the window, whichever
    // needs fewer bytes by the average line length loaded.
    const n = this.firstLine !== null ? this.endLine - this.firstLine : 0;
    const avg = n > 0 ? (this.hi - this.lo) / n : 80;
    const at = this.firstLine !== null ? this.lo - (this.firstLine - a) * avg : 0;
    if (this.size <= WHOLE_MAX) {
      await this.loadWhole();
      return;
    }
    if (this.firstLine === null || at < this.lo - at) {
      await this.jumpToStart();
      while (this.endLine !== null && this.endLine <= b && this.hi < this.size && this.hi - this.lo < MAX_LOADED) await this.loadLater();
      return;
    }
    while (this.firstLine !== null && this.firstLine > a && (await this.loadEarlier()));
  }

  // --- errors ---

  // Shows error line el (null: says there is none); select: also put it
  // into the address, as a click on its number would.
  showError(el, select, moveWindow = true) {
    for (const x of this.pre.querySelectorAll(".ll.err-cur")) x.classList.remove("err-cur");
    this.errorEl = el;
    if (!el) return false;
    el.classList.add("err-cur");
    const n = el.firstChild && el.firstChild.dataset ? Number(el.firstChild.dataset.n) : NaN;
    if (select && Number.isFinite(n)) {
      this.selection = [n, n];
      this.anchor = n;
      this.applySelection(false);
      if (this.onSelect) this.onSelect(n, n);
    }
    this.scrollToLine(el, moveWindow);
    this.el.dataset.errorLine = Number.isFinite(n) ? n : "";
    return true;
  }

  async firstError() {
    this.say("");
    const whole = this.lo === 0 && this.hi >= this.size;
    if (!whole && this.size <= WHOLE_MAX) await this.loadWhole();
    const el = this.pre.querySelector(".ll.err");
    const partial = !(this.lo === 0 && this.hi >= this.size);
    if (!this.showError(el, true)) this.say(partial ? `no error line in the loaded ${fmtBytes(this.hi - this.lo)}` : "no line matches the error patterns");
    else if (partial) this.say(`the first error in the loaded ${fmtBytes(this.hi - this.lo)} of ${fmtBytes(this.size)}`);
    this.refresh();
  }

  nextError(dir) {
    const all = [...this.pre.querySelectorAll(".ll.err")];
    if (!all.length) return;
    let i = this.errorEl ? all.indexOf(this.errorEl) : -1;
    if (i < 0) {
      // From the selection, or from the top of what is on screen.
      const from = this.selection ? this.lineEl(this.selection[0]) : null;
      const pos = from ? from.offsetTop : this.pre.scrollTop;
      i = dir > 0 ? all.findIndex((e) => e.offsetTop > pos) - 1 : all.findIndex((e) => e.offsetTop >= pos);
      if (dir > 0 && i < -1) i = all.length - 1;
      if (dir < 0 && i < 0) i = all.length;
    }
    const j = (i + dir + all.length) % all.length;
    this.showError(all[j], true);
  }

  // --- search within the loaded part ---

  clearHits() {
    for (const m of this.pre.querySelectorAll("mark.hit")) m.replaceWith(...m.childNodes);
    this.pre.normalize();
    this.hits = [];
    this.hit = -1;
  }

  find(query) {
    this.clearHits();
    this.lastQuery = query;
    if (!query) {
      this.hitInfo.textContent = "";
      return 0;
    }
    const re = new RegExp(query.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "giu");
    const walker = document.createTreeWalker(this.pre, NodeFilter.SHOW_TEXT);
    const nodes = [];
    for (let n = walker.nextNode(); n; n = walker.nextNode()) nodes.push(n);
    for (let node of nodes) {
      if (this.hits.length >= MAX_HITS) break;
      re.lastIndex = 0;
      let m;
      while (this.hits.length < MAX_HITS && (m = re.exec(node.data))) {
        const match = node.splitText(m.index);
        const rest = match.splitText(m[0].length);
        const mark = h("mark", { class: "hit" });
        match.replaceWith(mark);
        mark.appendChild(match);
        this.hits.push(mark);
        node = rest;
        re.lastIndex = 0;
      }
    }
    this.hitInfo.textContent = this.hits.length
      ? ""
      : `no match in the loaded ${fmtBytes(this.hi - this.lo)}`;
    if (this.hits.length) this.nextHit(1);
    return this.hits.length;
  }

  nextHit(dir) {
    if (!this.hits.length) return;
    if (this.hit >= 0) this.hits[this.hit].classList.remove("current");
    this.hit = (this.hit + dir + this.hits.length) % this.hits.length;
    const m = this.hits[this.hit];
    m.classList.add("current");
    m.scrollIntoView({ block: "center" });
    const more = this.hits.length >= MAX_HITS ? "+" : "";
    this.hitInfo.textContent = `${this.hit + 1} of ${this.hits.length}${more}`;
  }
}

// Where the first whole line starts in bytes (after the first newline), so
// a window starting mid-log begins on a line (and UTF-8 character)
// boundary; 0 when there is no newline.
function afterFirstNewline(bytes) {
  const i = bytes.indexOf(NL);
  return i < 0 ? 0 : i + 1;
}

function base64Bytes(b64) {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
