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

import { ansiFeed, createAnsiState, styleToCss } from "./ansi.js";
import { getRange, apiUrl } from "./api.js";
import { h } from "./dom.js";
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

const NL = 10;

export class LogViewer {
  // buildId, step: which log; size: its size as last seen (log.bytes);
  // running: whether the step still runs (then the viewer follows it).
  // onSize(size) is told when the log is seen to grow.
  constructor({ buildId, step, size, running, stepName, onSize }) {
    this.onSize = onSize || null;
    this.lastToldSize = -1;
    this.buildId = buildId;
    this.step = step;
    this.size = size || 0;
    this.running = !!running;
    this.path = `/builds/${buildId}/steps/${step}/log`;
    this.blocks = [];
    this.lo = 0;
    this.hi = 0;
    this.following = false;
    this.fetched = 0;
    this.requests = 0;
    this.chain = Promise.resolve();
    this.unsub = null;
    this.destroyed = false;
    this.hits = [];
    this.hit = -1;
    this.build(stepName);
  }

  build(stepName) {
    this.info = h("span", { class: "log-info" });
    this.btnEarlier = h("button", { type: "button", onclick: () => this.enqueue(() => this.loadEarlier()) }, "Load earlier");
    this.btnStart = h("button", { type: "button", onclick: () => this.enqueue(() => this.jumpToStart()) }, "Jump to start");
    this.btnLater = h("button", { type: "button", onclick: () => this.enqueue(() => this.loadLater()) }, "Load later");
    this.btnEnd = h("button", { type: "button", onclick: () => this.enqueue(() => this.jumpToEnd()) }, "Jump to end");
    this.search = h("input", {
      type: "search",
      placeholder: "search the loaded part",
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
    this.pre = h("pre", { class: "log", tabindex: "0" });
    this.status = h("div", { class: "log-status" });
    this.el = h(
      "div",
      { class: "logview", dataset: { build: this.buildId, step: this.step } },
      h(
        "div",
        { class: "logbar" },
        h("strong", null, stepName ? `log of ${stepName}` : `log of step ${this.step}`),
        this.info,
        h("span", { class: "log-buttons" }, this.btnEarlier, this.btnStart, this.btnLater, this.btnEnd),
        h(
          "span",
          { class: "log-find" },
          this.search,
          h("button", { type: "button", onclick: () => this.find(this.search.value) }, "Find"),
          h("button", { type: "button", title: "previous match", onclick: () => this.nextHit(-1) }, "↑"),
          h("button", { type: "button", title: "next match", onclick: () => this.nextHit(1) }, "↓"),
          this.hitInfo,
        ),
        raw,
      ),
      this.pre,
      this.status,
    );
  }

  // Loads the tail and, when the step runs, follows it. Returns a promise
  // settled when the first view is on screen.
  start() {
    if (this.running) this.follow();
    return this.enqueue(() => this.jumpToEnd());
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
    this.chain = p.catch((e) => this.showError(e));
    return this.chain;
  }

  showError(e) {
    if (!this.destroyed) this.status.textContent = `could not load the log: ${e.message}`;
  }

  // --- fetching ---

  async fetch(range) {
    const r = await getRange(this.path, range);
    this.fetched += r.bytes.length;
    this.requests++;
    if (r.size > this.size) this.size = r.size;
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
    this.hits = [];
    this.hit = -1;
    this.hitInfo.textContent = "";
  }

  async jumpToEnd() {
    if (this.liveReady) await this.liveReady;
    let r = null;
    if (this.size > 0) r = await this.fetch(`bytes=-${TAIL}`);
    this.clear();
    if (r) {
      const skip = r.start > 0 ? afterFirstNewline(r.bytes) : 0;
      this.lo = r.start + skip;
      this.hi = this.lo;
      this.newBlock();
      this.appendBytes(r.bytes.subarray(skip));
    } else {
      this.lo = this.hi = 0;
      this.newBlock();
    }
    this.following = true;
    this.refresh();
    this.pre.scrollTop = this.pre.scrollHeight;
  }

  async jumpToStart() {
    const r = await this.fetch(`bytes=0-${LATER - 1}`);
    this.clear();
    this.lo = this.hi = 0;
    this.newBlock();
    this.appendBytes(r.bytes);
    this.following = this.hi >= this.size;
    this.refresh();
    this.pre.scrollTop = 0;
  }

  async loadLater() {
    if (this.hi >= this.size) return;
    const r = await this.fetch(`bytes=${this.hi}-${Math.min(this.size, this.hi + LATER) - 1}`);
    if (r.start !== this.hi) return;
    this.appendBytes(r.bytes);
    this.following = this.hi >= this.size;
    this.refresh();
  }

  async loadEarlier() {
    if (this.lo <= 0) return;
    if (this.hi - this.lo >= MAX_LOADED) {
      this.status.textContent = `${fmtBytes(MAX_LOADED)} are loaded, the most this page holds: use "Jump to start"`;
      return;
    }
    const a = Math.max(0, this.lo - EARLIER);
    const r = await this.fetch(`bytes=${a}-${this.lo - 1}`);
    const skip = a > 0 ? afterFirstNewline(r.bytes) : 0;
    const el = h("div", { class: "log-block" });
    const before = this.pre.scrollHeight;
    const top = this.pre.scrollTop;
    const state = createAnsiState();
    const dec = new TextDecoder("utf-8");
    renderInto(el, state, dec.decode(r.bytes.subarray(skip)));
    this.pre.insertBefore(el, this.pre.firstChild);
    this.blocks.unshift({ lo: a + skip, hi: this.lo, el });
    this.lo = a + skip;
    this.pre.scrollTop = top + (this.pre.scrollHeight - before);
    this.refresh();
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

  newBlock() {
    const prev = this.blocks[this.blocks.length - 1];
    const block = {
      lo: this.hi,
      hi: this.hi,
      el: h("div", { class: "log-block" }),
      // A new block continues the stream of the previous one.
      decoder: prev && prev.decoder ? prev.decoder : new TextDecoder("utf-8"),
      ansi: prev && prev.ansi ? prev.ansi : createAnsiState(),
    };
    if (prev) {
      prev.decoder = null;
      prev.ansi = null;
    }
    this.blocks.push(block);
    this.pre.appendChild(block.el);
    return block;
  }

  // Appends bytes at hi to the streaming (last) block.
  appendBytes(bytes) {
    if (!bytes.length) return;
    let block = this.blocks[this.blocks.length - 1] || this.newBlock();
    if (block.hi - block.lo >= BLOCK_MAX) block = this.newBlock();
    const atBottom = this.pre.scrollHeight - this.pre.scrollTop - this.pre.clientHeight < 40;
    renderInto(block.el, block.ansi, block.decoder.decode(bytes, { stream: true }));
    block.hi += bytes.length;
    this.hi += bytes.length;
    this.trim();
    if (atBottom) this.pre.scrollTop = this.pre.scrollHeight;
  }

  // Drops the oldest blocks while more than MAX_LOADED bytes are loaded.
  trim() {
    while (this.blocks.length > 1 && this.hi - this.blocks[0].hi >= MAX_LOADED) {
      const b = this.blocks.shift();
      b.el.remove();
      this.lo = this.blocks[0].lo;
    }
  }

  refresh() {
    const loaded = this.hi - this.lo;
    this.info.textContent =
      this.size === 0
        ? "empty"
        : `bytes ${fmtInt(this.lo)}–${fmtInt(this.hi)} of ${fmtInt(this.size)} (${fmtBytes(loaded)} loaded)`;
    this.btnEarlier.disabled = this.lo <= 0;
    this.btnStart.disabled = this.lo <= 0;
    this.btnLater.disabled = this.hi >= this.size;
    this.btnEnd.disabled = this.hi >= this.size && this.following;
    this.status.textContent = this.running
      ? this.following
        ? "following the output live"
        : "the step is running; jump to the end to follow it"
      : "";
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

// Renders decoded text with ANSI styles into el (text nodes and spans).
function renderInto(el, ansiState, text) {
  if (!text) return;
  const frag = document.createDocumentFragment();
  for (const seg of ansiFeed(ansiState, text.replace(/\r\n/g, "\n"))) {
    if (!seg.style) {
      frag.appendChild(document.createTextNode(seg.text));
      continue;
    }
    const css = styleToCss(seg.style);
    const span = document.createElement("span");
    if (css.classes.length) span.className = css.classes.join(" ");
    if (css.color) span.style.color = css.color;
    if (css.background) span.style.backgroundColor = css.background;
    span.textContent = seg.text;
    frag.appendChild(span);
  }
  el.appendChild(frag);
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
