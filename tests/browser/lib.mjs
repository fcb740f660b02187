// lib.mjs - what the browser tests share: starting Debian's Chromium
// through playwright-core (never a downloaded browser), collecting console
// errors per page, waiting for a page to be drawn, screenshots, and the
// check/measure bookkeeping that run.mjs reports as JSON.
//
// playwright-core comes from web/node_modules (web/package.json,
// installed by `npm ci --prefix web`).
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "../../web/node_modules/playwright-core/index.mjs";

export const CHROMIUM = process.env.TF_CHROMIUM || "/usr/bin/chromium";

// The two screens every page is checked at: a laptop and a phone.
export const DESKTOP = { width: 1440, height: 900 };
export const PHONE = { width: 390, height: 844 };

const AXE = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "web", "node_modules", "axe-core", "axe.min.js");

// The flags .library/env/machines/c.md lists for this machine: no sandbox
// (root), no GPU, and nothing that phones home (the network is closed).
export const CHROMIUM_FLAGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
];

// A browser with a fresh, empty profile (removed by close()).
export async function launch({ userDataDir } = {}) {
  const dir = userDataDir || mkdtempSync(join(tmpdir(), "tf-chromium-"));
  mkdirSync(dir, { recursive: true });
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: DESKTOP,
    deviceScaleFactor: 1,
    timezoneId: "UTC",
    locale: "en-GB",
  });
  return {
    context,
    async close() {
      await context.close().catch(() => {});
      if (!userDataDir) rmSync(dir, { recursive: true, force: true });
    },
  };
}

// A new page that records console errors, uncaught exceptions and failed
// requests into page.problems. allow(text) may excuse an expected one
// (a 401 a test provokes on purpose).
export async function newPage(context, { allow } = {}) {
  const page = await context.newPage();
  page.problems = [];
  const excused = (t) => (allow ? allow(t) : false);
  page.on("console", (m) => {
    const where = m.location().url || "";
    if (m.type() === "error" && !excused(`${m.text()} ${where}`)) page.problems.push(`console error: ${m.text()} (${where})`);
  });
  page.on("pageerror", (e) => {
    if (!excused(e.message)) page.problems.push(`uncaught exception: ${e.message}`);
  });
  page.on("requestfailed", (r) => {
    const why = r.failure() ? r.failure().errorText : "";
    // Aborted requests are normal when a test navigates on.
    if (why.includes("ERR_ABORTED")) return;
    if (!excused(`${r.url()} ${why}`)) page.problems.push(`request failed: ${r.url()} ${why}`);
  });
  return page;
}

// Opens base + hash and waits until the page has drawn its data
// (main .page[data-ready]).
export async function openPage(page, base, hash, { timeout = 15000 } = {}) {
  const t0 = Date.now();
  await page.goto(`${base}/#${hash}`, { waitUntil: "load", timeout });
  await waitReady(page, timeout);
  return Date.now() - t0;
}

export async function waitReady(page, timeout = 15000) {
  await page.waitForSelector("main .page[data-ready]", { timeout, state: "attached" });
}

// Navigates within the app (no reload) and waits for the new page.
export async function goHash(page, hash, { timeout = 15000 } = {}) {
  await page.evaluate((hh) => {
    const old = document.querySelector("main .page");
    if (old) old.dataset.stale = "1";
    location.hash = hh;
  }, hash);
  await page.waitForSelector("main .page[data-ready]:not([data-stale])", { timeout, state: "attached" });
}

export async function api(base, path, { method = "GET", token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`${base}/api/v1${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {
    /* raw */
  }
  return { status: r.status, json, text };
}

export async function until(what, fn, { timeout = 20000, interval = 50 } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what} (last: ${String(last).slice(0, 300)})`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

// Collects checks and measurements; run.mjs prints them as one JSON line.
export class Report {
  constructor(name) {
    this.name = name;
    this.checks = [];
    this.measures = {};
    this.notes = [];
  }
  check(name, ok, detail = "") {
    this.checks.push({ name, ok: !!ok, detail: String(detail).slice(0, 4000) });
    const mark = ok ? "ok  " : "FAIL";
    console.log(`${mark} ${this.name}: ${name}${detail && !ok ? ` -- ${String(detail).slice(0, 1000)}` : ""}`);
    return !!ok;
  }
  measure(name, value, unit = "") {
    this.measures[name] = value;
    console.log(`measure ${this.name}: ${name} = ${typeof value === "number" ? Math.round(value * 10) / 10 : value}${unit ? ` ${unit}` : ""}`);
  }
  note(text) {
    this.notes.push(text);
    console.log(`note ${this.name}: ${text}`);
  }
  noProblems(page, what) {
    return this.check(`${what}: no console errors`, page.problems.length === 0, page.problems.join("\n"));
  }
  get ok() {
    return this.checks.length > 0 && this.checks.every((c) => c.ok);
  }
}

// A screenshot into S.shots (and docs/images when S.docs_images is set).
export async function shot(page, S, name, report, { fullPage = false } = {}) {
  mkdirSync(S.shots, { recursive: true });
  const file = join(S.shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage });
  if (S.docs_images) {
    mkdirSync(S.docs_images, { recursive: true });
    copyFileSync(file, join(S.docs_images, `${name}.png`));
  }
  report.note(`screenshot ${file}`);
}

// Runs axe-core (from web/node_modules, injected into the page) on the
// whole page against WCAG 2.1 A and AA; returns the violations of impact
// serious or critical as lines of text. exclude: selectors axe skips (a
// step's log is the program's own output, colours and all).
let axeSource = null;
export async function axeViolations(page, { exclude = [] } = {}) {
  if (!axeSource) axeSource = readFileSync(AXE, "utf8");
  // Evaluated through the debugging protocol: the master's Content
  // Security Policy rightly refuses inline scripts.
  if (!(await page.evaluate(() => !!window.axe))) await page.evaluate(`${axeSource}\n;void 0`);
  const res = await page.evaluate(async (ex) => {
    const r = await window.axe.run(
      { include: [document], exclude: ex.map((s) => [s]) },
      { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] }, resultTypes: ["violations"] },
    );
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.slice(0, 5).map((n) => `${n.target.join(" ")}: ${(n.failureSummary || "").replace(/\s+/g, " ").slice(0, 300)}`),
    }));
  }, exclude);
  return res.filter((v) => v.impact === "serious" || v.impact === "critical").map((v) => `${v.id} (${v.impact}): ${v.help}\n    ${v.nodes.join("\n    ")}`);
}

// How far the page reaches past the screen sideways, in px (0: no
// sideways scrolling), and the widest elements that stick out.
export async function overflowOf(page) {
  return page.evaluate(() => {
    const w = document.documentElement.clientWidth;
    const over = Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - w;
    const culprits = [];
    if (over > 0) {
      for (const el of document.querySelectorAll("body *")) {
        const r = el.getBoundingClientRect();
        if (r.right > w + 1 && r.width > 0) {
          // Inside a box that scrolls by itself is fine.
          let p = el.parentElement;
          let scrolled = false;
          while (p && p !== document.body) {
            const ox = getComputedStyle(p).overflowX;
            if (ox === "auto" || ox === "scroll" || ox === "hidden") {
              scrolled = true;
              break;
            }
            p = p.parentElement;
          }
          if (!scrolled) culprits.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ""}.${[...el.classList].join(".")} right=${Math.round(r.right)}`);
        }
        if (culprits.length >= 5) break;
      }
    }
    return { over, width: w, culprits };
  });
}
