// ux.mjs - the browser tests of issue 14's pages (run.mjs registers these
// groups; test_browser.py starts them): the build page's log (where it
// sits, line numbers, links to lines, errors, collapsible steps, a step
// that does not exist, the blamelist), the waterfall's fit with 8 and 12
// builders, its header states, authors, step names and live boxes, the
// console's links and the change page, the builder plots' axes and
// points, every page at 1440x900 and 390x844 (no sideways page scroll,
// axe-core without serious or critical violations, also in the dark
// scheme), and the "master unreachable" banner with the master really
// stopped and started again. Every check is on what a user sees: element
// geometry, text, the address, pixels of a chart.
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { DESKTOP, PHONE, api, axeViolations, goHash, newPage, openPage, overflowOf, shot, until } from "./lib.mjs";

const text = (page, sel) => page.locator(sel).first().innerText();
const count = (page, sel) => page.locator(sel).count();
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Sets the address and waits until the page shows what want() says (for
// changes a page takes in place, without drawing itself again).
async function setHash(page, hash, want, what, timeout = 10000) {
  await page.evaluate((hh) => {
    location.hash = hh;
  }, hash);
  await page.waitForFunction(want, null, { timeout }).catch(() => {
    throw new Error(`timed out waiting for ${what}`);
  });
}

// Whether element el (a selector) is inside the log box's visible part.
function lineVisible(page, n) {
  return page.evaluate((nn) => {
    const ln = document.querySelector(`pre.log .ln[data-n="${nn}"]`);
    if (!ln) return false;
    const r = ln.parentElement.getBoundingClientRect();
    const p = document.querySelector("pre.log").getBoundingClientRect();
    return r.top >= p.top - 1 && r.bottom <= p.bottom + 1 && r.top >= 0 && r.bottom <= window.innerHeight;
  }, n);
}

function lineText(page, n) {
  return page.evaluate((nn) => {
    const ln = document.querySelector(`pre.log .ln[data-n="${nn}"]`);
    return ln ? ln.parentElement.textContent : null;
  }, n);
}

// --- buildpage: the log near the top, line numbers and links, errors ---

export async function groupBuildPage(r, ctx, S) {
  const page = await newPage(ctx);
  await page.setViewportSize(DESKTOP);
  const E = S.errors;
  const B = E.build;
  await openPage(page, S.base, `/builds/${B}`);
  await page.waitForSelector(".logview[data-fetched]", { timeout: 10000 });
  await page.waitForSelector(".logview[data-error-line]", { timeout: 10000 });

  // Where the log is: near the top, most of the screen.
  const geo = await page.evaluate(() => {
    const pre = document.querySelector("pre.log");
    const rect = pre.getBoundingClientRect();
    const lh = parseFloat(getComputedStyle(pre).lineHeight) || 17;
    return { top: rect.top, bottom: rect.bottom, lines: (Math.min(rect.bottom, window.innerHeight) - Math.max(rect.top, 0)) / lh, scrollY: window.scrollY };
  });
  r.measure("log_top_px_1440x900", geo.top, "px");
  r.measure("log_visible_lines_1440x900", Math.floor(geo.lines));
  r.check("build: the log starts in the top third of a 1440x900 screen", geo.top <= 300 && geo.scrollY === 0, JSON.stringify(geo));
  r.check("build: at least 30 log lines visible without scrolling", geo.lines >= 30, JSON.stringify(geo));

  // The failed step opens at its first error within the loaded tail.
  const errLine = Number(await page.getAttribute(".logview", "data-error-line"));
  r.check("build: a failed step opens at the first error of the loaded tail (line 2600)", errLine === 2600, String(errLine));
  r.check("build: that error line is on screen", await lineVisible(page, 2600));
  r.check("build: the page did not scroll to get there", (await page.evaluate(() => window.scrollY)) === 0);

  // Line numbers count from the log's start although only its tail is
  // loaded (the master's line count).
  const last = await lineText(page, E.lines);
  r.check(`build: the last line is numbered ${E.lines}`, !!last && last.startsWith(`filler line ${E.lines} of the log`), String(last));
  const lo = Number(await page.getAttribute(".logview", "data-lo"));
  r.check("build: only the tail was loaded at first", lo > 0, String(lo));
  r.check("build: error lines of the tail are marked", (await count(page, `pre.log .ln[data-n="2600"]`)) === 1 && (await page.evaluate(() => document.querySelector('pre.log .ln[data-n="2900"]').parentElement.classList.contains("err"))));
  r.check(
    "build: '0 tests failed' is not an error",
    await page.evaluate((n) => !document.querySelector(`pre.log .ln[data-n="${n}"]`).parentElement.classList.contains("err"), E.not_error_line),
  );
  r.check("build: copying the text copies no line numbers", !(await page.evaluate(() => document.querySelector("pre.log").textContent)).includes(`${3000}filler`));

  // First error: the whole (small) log is loaded and the first error shown.
  await page.click(".err-first");
  await page.waitForFunction(() => document.querySelector(".logview").dataset.errorLine === "40", null, { timeout: 10000 });
  r.check("build: 'First error' shows line 40 (before the tail)", (await lineText(page, 40)).includes('error: expected ";" before "return"'), await lineText(page, 40));
  r.check("build: line 40 is on screen", await lineVisible(page, 40));
  r.check("build: the address links to line 40", (await page.evaluate(() => location.hash)) === `#/builds/${B}/steps/${E.step}/L40`, await page.evaluate(() => location.hash));
  const seen = [40];
  for (let i = 0; i < 4; i++) {
    await page.click(".err-next");
    const before = seen[seen.length - 1];
    await page.waitForFunction((b) => document.querySelector(".logview").dataset.errorLine !== String(b), before, { timeout: 5000 });
    seen.push(Number(await page.getAttribute(".logview", "data-error-line")));
  }
  r.check("build: 'next error' goes 40, 1500, 2600, 2900 and round to 40", JSON.stringify(seen) === JSON.stringify([40, 1500, 2600, 2900, 40]), JSON.stringify(seen));
  r.check("build: the sanitizer report is an error", (await lineText(page, 1500)).includes("AddressSanitizer"));
  await page.click(".err-prev");
  await page.waitForFunction(() => document.querySelector(".logview").dataset.errorLine === "2900", null, { timeout: 5000 });
  r.check("build: 'previous error' from 40 goes to 2900", true);
  r.check("build: four error lines counted", (await text(page, ".log-errors")).startsWith("4 error lines"), await text(page, ".log-errors"));

  // A link to a range, set in the address of the open page: taken in
  // place (the page is not drawn again), highlighted, scrolled to.
  await page.evaluate(() => {
    document.querySelector("main .page").dataset.marker = "same";
  });
  await setHash(page, `#/builds/${B}/steps/${E.step}/L120-L140`, () => document.querySelector(".logview").dataset.selected === "120-140", "lines 120-140 selected");
  const sel = await page.evaluate(() => [...document.querySelectorAll("pre.log .ll.sel .ln")].map((x) => Number(x.dataset.n)));
  r.check("build: #.../L120-L140 highlights lines 120 to 140", sel.length === 21 && sel[0] === 120 && sel[20] === 140, JSON.stringify(sel.slice(0, 3)));
  r.check("build: line 120 is the log's line 120", (await lineText(page, 120)).startsWith("filler line 120 of the log"), await lineText(page, 120));
  r.check("build: line 120 is on screen", await lineVisible(page, 120));
  r.check("build: the page was not drawn again for it", (await page.getAttribute("main .page", "data-marker")) === "same");

  // Clicking numbers selects a line, shift-click a range, in the address.
  await page.click(`pre.log .ln[data-n="130"]`);
  await page.click(`pre.log .ln[data-n="133"]`, { modifiers: ["Shift"] });
  const hash = await page.evaluate(() => location.hash);
  r.check("build: click and shift-click select L130-L133 in the address", hash === `#/builds/${B}/steps/${E.step}/L130-L133`, hash);
  r.check("build: and highlight them", (await page.getAttribute(".logview", "data-selected")) === "130-133");
  await shot(page, S, "build-log-lines", r);

  // A fresh load of a link near the end (numbered from the tail).
  await openPage(page, S.base, `/builds/${B}/steps/${E.step}/L2990-L2995`);
  await page.waitForFunction(() => document.querySelector(".logview") && document.querySelector(".logview").dataset.selected === "2990-2995", null, { timeout: 10000 });
  r.check("build: a fresh load of L2990-L2995 shows those lines", (await lineText(page, 2990)).startsWith("filler line 2990 of the log") && (await lineVisible(page, 2990)));
  // ... and of a link before the tail.
  await openPage(page, S.base, `/builds/${B}/steps/${E.step}/L7`);
  await page.waitForFunction(() => document.querySelector(".logview") && document.querySelector(".logview").dataset.selected === "7-7", null, { timeout: 10000 });
  r.check("build: a fresh load of L7 shows line 7", (await lineText(page, 7)).startsWith("filler line 7 of the log") && (await lineVisible(page, 7)));
  // A line past the end says so.
  await setHash(page, `#/builds/${B}/steps/${E.step}/L99999`, () => /no line 99999/.test(document.querySelector(".log-status").textContent), "the no-such-line message");
  r.check("build: a line past the end says the log's length", (await text(page, ".log-status")).includes(`this log has ${E.lines.toLocaleString("en")} lines`), await text(page, ".log-status"));

  // Steps: another step in place, a step that does not exist.
  await page.click('#steps tr[data-step="0"] a.step-link');
  await page.waitForFunction(() => document.querySelector(".logview") && document.querySelector(".logview").dataset.step === "0", null, { timeout: 5000 });
  // The view is made before its log arrives (slow under ASan): wait for
  // the text, then check it (a timeout leaves the check to fail).
  await page.waitForFunction(() => (document.querySelector("pre.log")?.textContent || "").includes("preparing"), null, { timeout: 10000 }).catch(() => {});
  r.check("build: a step link shows that step's log", (await text(page, "pre.log")).includes("preparing"));
  await setHash(page, `#/builds/${B}/steps/9`, () => !!document.querySelector("#log-missing"), "the missing-step message");
  const missing = await text(page, "#log-missing");
  r.check("build: #/builds/B/steps/9 on a 2-step build says there is no step 9", /No step 9 in this build: it has 2 steps/.test(missing) && !/not started/.test(missing), missing);

  // Collapsible steps: the log takes the room.
  await setHash(page, `#/builds/${B}/steps/${E.step}`, () => !!document.querySelector(".logview[data-fetched]"), "the log again");
  const w0 = await page.evaluate(() => document.querySelector("pre.log").getBoundingClientRect().width);
  await page.click("#steps-panel > summary");
  await page.waitForFunction((w) => document.querySelector("pre.log").getBoundingClientRect().width > w + 200, w0, { timeout: 5000 }).catch(() => {});
  const w1 = await page.evaluate(() => document.querySelector("pre.log").getBoundingClientRect().width);
  r.check("build: collapsing the steps widens the log", w1 > w0 + 200, `${w0} -> ${w1}`);
  r.check("build: the steps are hidden", !(await page.isVisible("#steps")));
  await page.click("#steps-panel > summary");
  r.check("build: and they come back", await page.isVisible("#steps"));

  // The blamelist.
  const BL = S.blame;
  await openPage(page, S.base, `/builds/${BL.build}`);
  const items = await page.locator("#blamelist li").allInnerTexts();
  r.check("build: the blamelist lists both changes", items.length === 2, items.join(" | "));
  r.check("build: with their authors", BL.authors.every((a) => items.join(" ").includes(a)), items.join(" | "));
  r.check("build: with their messages", items.join(" ").includes("Fix the parser on empty input") && items.join(" ").includes("Document the API"));
  const hrefs = await page.$$eval("#blamelist a.change-link", (as) => as.map((a) => a.getAttribute("href")));
  r.check("build: each links to its change page", JSON.stringify(hrefs) === JSON.stringify(BL.changes.map((c) => `#/changes/${c}`)), JSON.stringify(hrefs));
  const meta = await text(page, "#build-meta");
  r.check("build: the head names who is in the blamelist", meta.includes("2 changes by Bob Coder, Carol Writer"), meta);
  await shot(page, S, "build-blamelist", r, { fullPage: true });
  await openPage(page, S.base, `/builds/${B}`);
  await page.waitForSelector(".logview[data-error-line]", { timeout: 10000 });
  await shot(page, S, "build-errors", r);
  r.noProblems(page, "buildpage");
}

// --- waterfallfit: 8 and 12 builders at 1440 px, and a phone ---

async function fit(page, r, label) {
  const o = await overflowOf(page);
  const t = await page.evaluate(() => {
    const tb = document.querySelector("#waterfall").getBoundingClientRect();
    const heads = [...document.querySelectorAll("#waterfall thead th[data-builder]")].map((th) => th.getBoundingClientRect().right);
    const sc = document.querySelector(".waterfall-scroll");
    return { right: tb.right, width: tb.width, lastHead: Math.max(...heads), columns: heads.length, inner: sc.scrollWidth - sc.clientWidth, page: document.documentElement.scrollWidth };
  });
  r.measure(`page_width_${label}_px`, t.page, "px");
  r.measure(`table_width_${label}_px`, t.width, "px");
  return { ...o, ...t };
}

export async function groupWaterfallFit(r, ctx, S) {
  const page = await newPage(ctx);
  await page.setViewportSize(DESKTOP);
  await openPage(page, S.base, "/waterfall");
  let f = await fit(page, r, "12_builders_1440");
  r.check("waterfall: 12 builder columns", f.columns === 12, String(f.columns));
  r.measure("page_overflow_12_builders_1440_px", Math.max(0, f.over), "px");
  r.check("waterfall: 12 builders fit 1440 px (no sideways scroll)", f.over <= 0 && f.lastHead <= DESKTOP.width && f.inner <= 0, JSON.stringify(f));
  await shot(page, S, "waterfall-12", r);
  const only = S.builders8.map((b) => `builder=${b}`).join("&");
  await goHash(page, `/waterfall?${only}`);
  f = await fit(page, r, "8_builders_1440");
  r.check("waterfall: 8 builder columns", f.columns === 8, String(f.columns));
  r.check("waterfall: 8 builders fit 1440 px", f.over <= 0 && f.lastHead <= DESKTOP.width && f.inner <= 0, JSON.stringify(f));

  // The header row: state and pending count of each builder.
  await goHash(page, "/waterfall");
  const mac = await page.getAttribute('th[data-state-of="mac-only"] .bstate', "data-state");
  r.check("waterfall: mac-only's header says offline", mac === "offline", String(mac));
  r.check("waterfall: and 1 pending", (await text(page, 'th[data-state-of="mac-only"]')).includes("1 pending"), await text(page, 'th[data-state-of="mac-only"]'));
  r.check("waterfall: quick's header says idle", (await page.getAttribute('th[data-state-of="quick"] .bstate', "data-state")) === "idle");

  // Authors: a change build names its changes' authors, a try job's build
  // its author.
  const blameAuthor = await text(page, `.wbox[data-build="${S.blame.build}"] .wbox-author`).catch(() => "");
  r.check("waterfall: a change build's box names its authors", blameAuthor.includes("Bob Coder") && blameAuthor.includes("Carol Writer"), blameAuthor);
  const jobAuthor = await text(page, `.wbox[data-build="${S.app_build}"] .wbox-author`).catch(() => "");
  r.check("waterfall: a try job build's box names its author", jobAuthor.includes("Ann Author"), jobAuthor);

  // Step names are readable.
  const sizes = await page.$$eval("li.wstep", (ls) => ls.map((l) => parseFloat(getComputedStyle(l).fontSize)));
  r.measure("step_name_font_px", Math.min(...sizes), "px");
  r.check("waterfall: step names are at least 12 px", sizes.length > 10 && Math.min(...sizes) >= 12, JSON.stringify([...new Set(sizes)]));

  // A box created while the page is open shows its reason by itself.
  const reason = `live reason ${Date.now()}`;
  const forced = await api(S.base, "/builders/quick/force", { method: "POST", token: S.token, body: { reason } });
  r.check("waterfall: a build forced", forced.status === 201, forced.text);
  const bid = await until("the forced build to start", async () => (await api(S.base, `/requests/${forced.json.request_id}`)).json.build_id, { timeout: 20000 });
  const shown = await until(
    "the live box's reason",
    async () => page.evaluate(([id, want]) => {
      const el = document.querySelector(`.wbox[data-build="${id}"] .wbox-reason`);
      return el && el.textContent === want;
    }, [bid, reason]),
    { timeout: 10000 },
  ).catch(() => false);
  r.check("waterfall: a live box shows its reason without a reload", shown, reason);
  const steps = await until(
    "the live box's steps",
    async () => page.evaluate((id) => {
      const names = [...document.querySelectorAll(`.wbox[data-build="${id}"] li.wstep`)].map((l) => l.querySelector("a").textContent);
      return names.join(",") === "compile,test" && names;
    }, bid),
    { timeout: 10000 },
  ).catch(() => null);
  r.check("waterfall: and its steps, without a reload", !!steps, JSON.stringify(steps));
  const liveDone = await until("the live box to turn green", async () => page.evaluate((id) => document.querySelector(`.wbox[data-build="${id}"]`).className.includes("r-success"), bid), { timeout: 15000 }).catch(() => false);
  r.check("waterfall: and its result, without a reload", liveDone);

  // The header follows the builders live: a build of "slow" makes its
  // header say building, its cancel idle again, without a reload.
  const headState = (b) => page.getAttribute(`th[data-state-of="${b}"] .bstate`, "data-state").catch(() => null);
  const slowReq = await api(S.base, "/builders/slow/force", { method: "POST", token: S.token, body: { reason: "header state" } });
  const slowId = await until("the slow build to start", async () => (await api(S.base, `/requests/${slowReq.json.request_id}`)).json.build_id, { timeout: 20000 });
  const building = await until("slow's header to say building", async () => (await headState("slow")) === "building", { timeout: 10000 }).catch(() => false);
  r.check("waterfall: a builder's header says building while it builds, live", building, String(await headState("slow")));
  await api(S.base, `/builds/${slowId}/cancel`, { method: "POST", token: S.token });
  const idle = await until("slow's header to say idle", async () => (await headState("slow")) === "idle", { timeout: 10000 }).catch(() => false);
  r.check("waterfall: and idle again once it ends, live", idle, String(await headState("slow")));

  // The dense grid.
  await goHash(page, "/waterfall?view=grid");
  f = await fit(page, r, "grid_12_builders_1440");
  r.check("waterfall grid: fits 1440 px", f.over <= 0 && f.inner <= 0, JSON.stringify(f));
  const gh = await page.$$eval(".wgrid .wbox", (bs) => bs.map((b) => b.getBoundingClientRect().height));
  r.check("waterfall grid: one small square per build", gh.length >= 20 && Math.max(...gh) <= 24, `${gh.length} boxes, max ${Math.max(...gh)} px`);
  await shot(page, S, "waterfall-grid", r);

  // A phone: the table scrolls in its box, the page does not.
  await page.setViewportSize(PHONE);
  await openPage(page, S.base, "/waterfall");
  f = await fit(page, r, "12_builders_390");
  r.measure("page_overflow_12_builders_390_px", Math.max(0, f.over), "px");
  r.check("waterfall: on a phone the page does not scroll sideways", f.over <= 0, JSON.stringify(f));
  r.check("waterfall: on a phone the table scrolls in its box", f.inner > 0, JSON.stringify(f));
  await shot(page, S, "waterfall-phone", r);
  r.noProblems(page, "waterfallfit");
}

// --- changes: console titles link to change pages ---

export async function groupChanges(r, ctx, S) {
  // The unknown change below answers 404 on purpose.
  const page = await newPage(ctx, { allow: (t) => /status of 404/.test(t) });
  await page.setViewportSize(DESKTOP);
  const [first, second] = S.blame.changes;
  await openPage(page, S.base, "/console");
  const row = `tr[data-kind="change"][data-id="${first}"]`;
  const href = await page.getAttribute(`${row} .ctitle a`, "href");
  r.check("console: a change's title links to its change page", href === `#/changes/${first}`, String(href));
  r.check("console: the job's title links to its job page", (await page.getAttribute(`tr[data-kind="job"][data-id="${S.job_patch}"] .ctitle a`, "href")) === `#/jobs/${S.job_patch}`);
  r.check("console: no title links to the JSON API", (await page.$$eval(".ctitle a", (as) => as.filter((a) => a.getAttribute("href").includes("api/v1")).length)) === 0);
  await page.click(`${row} .ctitle a`);
  await page.waitForSelector("#change-revision", { timeout: 10000 });
  r.check("change: the revision", (await text(page, "#change-revision")) === S.blame.revisions[0], await text(page, "#change-revision"));
  r.check("change: the commit links the repository's page (commit_url)", (await page.getAttribute("#change-commit", "href")) === `https://git.example.org/app/commit/${S.blame.revisions[0]}`, String(await page.getAttribute("#change-commit", "href")));
  const info = await text(page, "#change-info");
  r.check("change: the author", info.includes("Bob Coder <bob@example.org>"), info);
  r.check("change: the whole message", (await text(page, "#change-message")).includes("It returned -1."), await text(page, "#change-message"));
  r.check("change: the files", (await text(page, "#change-files")) === "src/parser.c", await text(page, "#change-files"));
  r.check("change: the build that included it", (await count(page, `#change-builds tr[data-build="${S.blame.build}"]`)) === 1);
  r.check("change: the title says what it is", (await page.title()).startsWith("Fix the parser on empty input"), await page.title());
  await shot(page, S, "change", r);
  await goHash(page, `/changes/${second}`);
  r.check("change: the other change", (await text(page, "#change-files")) === "docs/api.md");
  await goHash(page, "/changes/999999");
  r.check("change: an unknown change says so", /Could not load this page/.test(await text(page, "main")) && /no such|not found|unknown/i.test(await text(page, "main")), await text(page, "main"));

  // A phone: the console's title column stays readable.
  await page.setViewportSize(PHONE);
  await openPage(page, S.base, "/console");
  const w = await page.$eval(`${row} .ctitle`, (el) => el.getBoundingClientRect().width);
  r.measure("console_title_column_390_px", w, "px");
  r.check("console: on a phone the title column is at least 140 px wide", w >= 140, String(w));
  const o = await overflowOf(page);
  r.check("console: on a phone the page does not scroll sideways", o.over <= 0, JSON.stringify(o));
  // Scrolled sideways, the titles stay in view.
  await page.$eval(".console-scroll", (el) => {
    el.scrollLeft = 400;
  });
  const left = await page.$eval(`${row} .ctitle`, (el) => el.getBoundingClientRect().left);
  r.check("console: the title column stays put when the builders scroll", left >= 0 && left < 40, String(left));
  await page.$eval(".console-scroll", (el) => {
    el.scrollLeft = 0;
  });
  await shot(page, S, "console-phone", r);
  r.noProblems(page, "changes");
}

// --- plotaxes: tick labels clear of the axis titles, points open builds ---

// Runs of occupied columns (vertical: rows) of a canvas region.
function runs(occupied) {
  const out = [];
  let start = -1;
  for (let i = 0; i <= occupied.length; i++) {
    if (i < occupied.length && occupied[i]) {
      if (start < 0) start = i;
    } else if (start >= 0) {
      out.push([start, i - 1]);
      start = -1;
    }
  }
  return out;
}

export async function groupPlotAxes(r, ctx, S) {
  const page = await newPage(ctx);
  await page.setViewportSize(DESKTOP);
  // A first visit: the title is the configured name's at once.
  await openPage(page, S.base, "/");
  await page.waitForFunction(() => document.getElementById("brand").textContent === "Browser test farm", null, { timeout: 5000 });
  r.check("titles: the summary's title names the configured master on first load", (await page.title()) === "Summary – Browser test farm", await page.title());
  await goHash(page, "/waterfall");
  r.check("titles: so does the waterfall's", (await page.title()) === "Waterfall – Browser test farm", await page.title());

  await goHash(page, "/builders/quick");
  await page.waitForSelector("#plots[data-drawn]", { timeout: 10000 });
  const plots = await page.$$eval(".plot", (ps) =>
    ps.map((p) => {
      const c = p.querySelector("canvas");
      const over = p.querySelector(".u-over");
      const g = c.getContext("2d");
      const k = c.width / c.getBoundingClientRect().width;
      const L = Math.round(over.offsetLeft * k);
      const T = Math.round(over.offsetTop * k);
      const W = Math.round(over.offsetWidth * k);
      const H = Math.round(over.offsetHeight * k);
      const img = g.getImageData(0, 0, c.width, c.height).data;
      const on = (x, y) => img[(y * c.width + x) * 4 + 3] > 40;
      const cols = [];
      for (let x = 0; x < L; x++) {
        let any = false;
        for (let y = T; y < T + H && !any; y++) any = on(x, y);
        cols.push(any);
      }
      const rows = [];
      for (let y = T + H; y < c.height; y++) {
        let any = false;
        for (let x = L; x < L + W && !any; x++) any = on(x, y);
        rows.push(any);
      }
      return { id: p.dataset.plot, cols, rows };
    }),
  );
  for (const p of plots) {
    const yr = runs(p.cols);
    const xr = runs(p.rows);
    // The y title is the leftmost run; the tick labels start after a gap.
    const yTitle = yr[0];
    const yGap = yr.length > 1 ? yr[1][0] - yTitle[1] - 1 : -1;
    r.check(`plot ${p.id}: the y axis title is clear of the tick labels`, yr.length >= 2 && yTitle[1] - yTitle[0] <= 20 && yGap >= 2, JSON.stringify(yr));
    const xTitle = xr[xr.length - 1];
    const xGap = xr.length > 1 ? xTitle[0] - xr[xr.length - 2][1] - 1 : -1;
    r.check(`plot ${p.id}: the x axis title is clear of the tick labels`, xr.length >= 2 && xTitle[1] - xTitle[0] <= 20 && xGap >= 2, JSON.stringify(xr));
  }

  // Clicking a point opens its build: find a point by its colour (a
  // success is green) and click there (on screen: the mouse cannot reach
  // below the window).
  // The page redraws its plots when new builds of the builder arrive (other
  // groups force builds while this one runs), which can move the points
  // between finding one and clicking it: so find, hover and click again,
  // a few times, until a click lands on a point as it is drawn now.
  const findSpot = () => page.$eval('.plot[data-plot="duration"]', (p) => {
    const c = p.querySelector("canvas");
    const over = p.querySelector(".u-over");
    const g = c.getContext("2d");
    const img = g.getImageData(0, 0, c.width, c.height).data;
    const k = c.width / c.getBoundingClientRect().width;
    const cr = c.getBoundingClientRect();
    // Only points well inside the plot area: the newest build's point sits
    // on its right edge, half outside the element that takes the pointer.
    const ob = over.getBoundingClientRect();
    const inside = (px, py) => px > ob.left + 6 && px < ob.right - 6 && py > ob.top + 6 && py < ob.bottom - 6;
    for (let y = Math.round(over.offsetTop * k); y < c.height; y++) {
      for (let x = Math.round(over.offsetLeft * k); x < c.width; x++) {
        const i = (y * c.width + x) * 4;
        if (img[i] === 46 && img[i + 1] === 158 && img[i + 2] === 68 && img[i + 3] === 255) {
          const at = { x: cr.left + (x + 2) / k, y: cr.top + (y + 3) / k };
          if (inside(at.x, at.y)) return at;
        }
      }
    }
    return null;
  });
  await page.locator('.plot[data-plot="duration"]').scrollIntoViewIfNeeded();
  const spot = await findSpot();
  r.check("plot: a green point is drawn", !!spot);
  if (spot) {
    // A spot of the plot area away from every point as drawn now: the
    // corner is not (the oldest build sits on the left edge, and when it
    // was the slowest, as under load, at the top too). Points are the
    // pixels of exactly a result's colour (plot.js draws each point so);
    // the page opens a build within 14 px of one.
    const away = await page.$eval('.plot[data-plot="duration"]', (p) => {
      const c = p.querySelector("canvas");
      const over = p.querySelector(".u-over");
      const img = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      const k = c.width / c.getBoundingClientRect().width;
      const inks = ["46,158,68", "224,154,26", "214,58,58", "156,63,192", "122,138,153", "187,187,187"];
      const pts = [];
      for (let i = 0; i < img.length; i += 4) {
        if (img[i + 3] === 255 && inks.includes(`${img[i]},${img[i + 1]},${img[i + 2]}`)) pts.push([(i / 4) % c.width, Math.floor(i / 4 / c.width)]);
      }
      const L = over.offsetLeft * k;
      const T = over.offsetTop * k;
      const far = 30 * k;
      const ob = over.getBoundingClientRect();
      const cr = c.getBoundingClientRect();
      for (let y = T + 8 * k; y < T + over.offsetHeight * k - 8 * k; y += 4 * k) {
        for (let x = L + 8 * k; x < L + over.offsetWidth * k - 8 * k; x += 4 * k) {
          if (pts.every(([px, py]) => Math.hypot(px - x, py - y) > far)) {
            const at = { x: cr.left + x / k, y: cr.top + y / k };
            if (at.x > ob.left && at.x < ob.right && at.y > ob.top && at.y < ob.bottom) return { ...at, points: pts.length };
          }
        }
      }
      return { points: pts.length };
    });
    r.check("plot: a spot of the plot area 30 px from every point", away.x !== undefined && away.points > 0, JSON.stringify(away));
    // The click is seen by the plot (so "opens nothing" is not vacuous).
    await page.$eval('.plot[data-plot="duration"] .u-over', (o) => {
      window.__awayClicks = 0;
      o.addEventListener("click", () => window.__awayClicks++, { once: true });
    });
    await page.mouse.move(away.x, away.y);
    await page.mouse.click(away.x, away.y);
    await page.waitForFunction(() => window.__awayClicks > 0, null, { timeout: 5000 }).catch(() => {});
    r.check("plot: a click away from the points reaches the plot and opens nothing", (await page.evaluate(() => window.__awayClicks)) === 1 && (await page.evaluate(() => location.hash)) === "#/builders/quick", await page.evaluate(() => `${window.__awayClicks} ${location.hash}`));
    let pointer = "";
    let hash = "";
    for (let attempt = 0; attempt < 5; attempt++) {
      await page.locator('.plot[data-plot="duration"]').scrollIntoViewIfNeeded();
      const at = attempt === 0 ? spot : await findSpot();
      if (!at) {
        await sleep(300);
        continue;
      }
      await page.mouse.move(at.x, at.y);
      // The pointer changes on the mousemove the page handles; a redraw
      // in between (a new build) leaves it default: try again then.
      await page.waitForFunction(() => document.querySelector('.plot[data-plot="duration"] .u-over').style.cursor === "pointer", null, { timeout: 1000 }).catch(() => {});
      pointer = await page.$eval('.plot[data-plot="duration"] .u-over', (o) => o.style.cursor);
      if (pointer !== "pointer") continue;
      await page.mouse.click(at.x, at.y);
      await page.waitForFunction(() => /^#\/builds\/\d+$/.test(location.hash), null, { timeout: 2000 }).catch(() => {});
      hash = await page.evaluate(() => location.hash);
      if (/^#\/builds\/\d+$/.test(hash)) break;
    }
    r.check("plot: the pointer says a point can be clicked", pointer === "pointer", pointer);
    const m = /^#\/builds\/(\d+)$/.exec(hash);
    r.check("plot: clicking a point opens a build", !!m, hash);
    if (m) {
      const b = (await api(S.base, `/builds/${m[1]}`)).json;
      r.check("plot: a build of that builder, with that result", b.builder === "quick" && b.result === "SUCCESS", JSON.stringify({ builder: b.builder, result: b.result }));
    }
  }
  await openPage(page, S.base, "/builders/quick");
  await page.waitForSelector("#plots[data-drawn]", { timeout: 10000 });
  await page.locator("#plots").scrollIntoViewIfNeeded();
  await shot(page, S, "builder-plots", r);
  // The other list pages' titles (after the plots: a page left behind
  // must not be under the mouse of the clicks above).
  for (const [hash, want] of [["/console", "Console"], ["/slaves", "Slaves"], ["/jobs", "Try jobs"]]) {
    await goHash(page, hash);
    r.check(`titles: and the ${want.toLowerCase()} list's`, (await page.title()) === `${want} – Browser test farm`, await page.title());
  }
  r.noProblems(page, "plotaxes");
}

// The live dot's text against its background (WCAG's contrast ratio).
async function dotContrast(page) {
  const dot = await page.$eval("#livestate", (el) => ({ text: el.textContent, fg: getComputedStyle(el).color, bg: getComputedStyle(el).backgroundColor }));
  const lum = (c) => {
    const [a, b, d] = c.match(/\d+/g).map((v) => {
      const x = Number(v) / 255;
      return x <= 0.03928 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * a + 0.7152 * b + 0.0722 * d;
  };
  const [hi, lo] = [lum(dot.fg), lum(dot.bg)].sort((x, y) => y - x);
  return { dot, ratio: (hi + 0.05) / (lo + 0.05) };
}

// --- layout: every page at both sizes, light and dark, axe-core ---

export async function groupLayout(r, ctx, S) {
  const page = await newPage(ctx, { allow: (t) => /status of 404/.test(t) });
  const pages = [
    ["summary", "/"],
    ["waterfall", "/waterfall"],
    ["waterfall grid", "/waterfall?view=grid"],
    ["console", "/console"],
    ["builder", "/builders/quick"],
    ["build", `/builds/${S.app_build}`],
    ["build with errors", `/builds/${S.errors.build}/steps/${S.errors.step}/L40`],
    ["build with a blamelist", `/builds/${S.blame.build}`],
    ["change", `/changes/${S.blame.changes[0]}`],
    ["slaves", "/slaves"],
    ["slave", "/slaves/s1"],
    ["try jobs", "/jobs"],
    ["try job", `/jobs/${S.job_patch}`],
  ];
  const modes = [
    ["1440x900", DESKTOP, "light"],
    ["390x844", PHONE, "light"],
    ["1440x900 dark", DESKTOP, "dark"],
    ["390x844 dark", PHONE, "dark"],
  ];
  let axeRuns = 0;
  for (const [mode, vp, scheme] of modes) {
    await page.setViewportSize(vp);
    await page.emulateMedia({ colorScheme: scheme });
    for (const [name, hash] of pages) {
      await openPage(page, S.base, hash);
      if (hash.startsWith("/builders/")) await page.waitForSelector("#plots[data-drawn]", { timeout: 10000 }).catch(() => {});
      if (hash.startsWith("/builds/")) await page.waitForSelector(".logview[data-fetched]", { timeout: 10000 }).catch(() => {});
      // A picture of each page in each mode, for a person to look at (the
      // test's shots directory only, never docs/images).
      mkdirSync(join(S.shots, "layout"), { recursive: true });
      await page.screenshot({ path: join(S.shots, "layout", `${name.replace(/ /g, "-")}-${mode.replace(/ /g, "-")}.png`) });
      const o = await overflowOf(page);
      r.check(`${name} at ${mode}: no sideways page scroll`, o.over <= 0, JSON.stringify(o));
      if (vp === PHONE) {
        const hdr = await page.$eval("header.top", (el) => el.getBoundingClientRect().right);
        if (name === "summary") r.measure(`header_right_${mode.replace(/ /g, "_")}_px`, hdr, "px");
        r.check(`${name} at ${mode}: the header fits`, hdr <= vp.width, String(hdr));
      }
      // A step's log is the program's own output, its colours too.
      const bad = await axeViolations(page, { exclude: ["pre.log .ll > span"] });
      axeRuns++;
      r.check(`${name} at ${mode}: axe finds no serious or critical violation`, bad.length === 0, bad.join("\n"));
    }
    if (scheme === "dark") {
      const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
      const [rr, gg, bb] = bg.match(/\d+/g).map(Number);
      r.check(`dark scheme at ${mode}: the page is dark`, rr + gg + bb < 120, bg);
    }
  }
  r.measure("axe_runs", axeRuns);

  // The token box has a label; the skip link is the first stop and moves
  // the focus to the content.
  await page.setViewportSize(DESKTOP);
  await page.emulateMedia({ colorScheme: "light" });
  await openPage(page, S.base, "/");
  r.check("a11y: the token box has a label", (await page.$eval("#token", (i) => (i.labels && i.labels.length ? i.labels[0].textContent : ""))) === "API token");
  await page.keyboard.press("Tab");
  const first = await page.evaluate(() => ({ id: document.activeElement.id, top: document.activeElement.getBoundingClientRect().top }));
  r.check("a11y: the first Tab reaches a visible skip link", first.id === "skip" && first.top >= 0, JSON.stringify(first));
  await page.keyboard.press("Enter");
  r.check("a11y: the skip link moves the focus to the content", (await page.evaluate(() => document.activeElement.id)) === "main");
  r.check("a11y: and leaves the address alone", (await page.evaluate(() => location.hash)) === "#/");
  // Keyboard only: Tab from the skip link to the header's Waterfall
  // link, Enter opens it; the focused element shows a ring.
  const tabTo = async (sel, max) => {
    for (let i = 0; i < max; i++) {
      await page.keyboard.press("Tab");
      if (await page.evaluate((s) => !!document.activeElement && document.activeElement.matches(s), sel)) return i + 1;
    }
    return 0;
  };
  const ring = () => page.evaluate(() => {
    const cs = getComputedStyle(document.activeElement);
    return cs.outlineStyle !== "none" && parseFloat(cs.outlineWidth) >= 2;
  });
  await page.focus("#skip");
  const toNav = await tabTo('#nav a[data-nav="waterfall"]', 10);
  r.check("keyboard: Tab reaches the Waterfall link", toNav > 0, `${toNav} presses`);
  r.check("keyboard: the focused link shows a focus ring", await ring());
  await page.keyboard.press("Enter");
  await page.waitForSelector("#waterfall", { timeout: 10000 }).catch(() => {});
  r.check("keyboard: Enter on it opens the waterfall", (await page.evaluate(() => location.hash)) === "#/waterfall", await page.evaluate(() => location.hash));
  // On a failed build: Tab to "First error", Enter shows line 40; Tab
  // to the steps' fold, Enter folds them away.
  await openPage(page, S.base, `/builds/${S.errors.build}`);
  await page.waitForSelector(".logview[data-error-line]", { timeout: 10000 });
  const toErr = await tabTo(".err-first", 80);
  r.check("keyboard: Tab reaches 'First error'", toErr > 0, `${toErr} presses`);
  r.check("keyboard: the focused button shows a focus ring", await ring());
  await page.keyboard.press("Enter");
  const kErr = await page.waitForFunction(() => document.querySelector(".logview").dataset.errorLine === "40", null, { timeout: 10000 }).then(() => true, () => false);
  r.check("keyboard: Enter on 'First error' shows line 40", kErr, await page.getAttribute(".logview", "data-error-line"));
  await page.focus("#skip");
  const toFold = await tabTo("#steps-panel > summary", 40);
  r.check("keyboard: Tab reaches the steps' fold", toFold > 0, `${toFold} presses`);
  await page.keyboard.press("Enter");
  r.check("keyboard: Enter folds the steps away", !(await page.isVisible("#steps")));
  await page.keyboard.press("Enter");
  r.check("keyboard: and Enter again brings them back", await page.isVisible("#steps"));
  await openPage(page, S.base, "/");

  const { dot, ratio } = await dotContrast(page);
  r.measure("live_dot_contrast", Math.round(ratio * 100) / 100, ":1");
  r.check("a11y: the live dot's contrast is at least 4.5:1", ratio >= 4.5, JSON.stringify(dot));
  await page.emulateMedia({ colorScheme: "dark" });
  const dark = await dotContrast(page);
  r.measure("live_dot_contrast_dark", Math.round(dark.ratio * 100) / 100, ":1");
  r.check("a11y: in the dark scheme too", dark.ratio >= 4.5, JSON.stringify(dark.dot));
  await page.emulateMedia({ colorScheme: "light" });

  // Pictures of the phone and dark layouts.
  await page.setViewportSize(PHONE);
  await openPage(page, S.base, "/");
  // The summary on a phone: every builder's cells on screen (no table
  // scrolling sideways), the "red since" line across the width.
  const ph = await page.evaluate((x) => {
    const box = document.querySelector("#summary-table").parentElement;
    const cells = [...document.querySelectorAll("#summary-table tbody td")].map((td) => td.getBoundingClientRect().right);
    const since = document.querySelector(`tr[data-builder="${x}"] .failing-since`).getBoundingClientRect();
    const slaves = document.querySelector(`tr[data-builder="${x}"] td.num`);
    return { inner: box.scrollWidth - box.clientWidth, right: Math.max(...cells), since: since.width, sinceH: since.height, slaves: slaves.innerText, label: getComputedStyle(slaves, "::before").content, role: document.querySelector("#summary-table").getAttribute("role") };
  }, S.broken.builder);
  r.measure("summary_red_since_width_390_px", Math.round(ph.since), "px");
  r.check("summary at 390x844: every column on screen, nothing scrolls sideways", ph.inner <= 0 && ph.right <= PHONE.width, JSON.stringify(ph));
  r.check("summary at 390x844: the 'red since' line spans the row", ph.since >= 300, JSON.stringify(ph));
  r.check("summary at 390x844: the slaves column says what it is", /^\d+$/.test(ph.slaves.trim()) && ph.label !== "none" && ph.label !== "normal", JSON.stringify(ph));
  r.check("summary at 390x844: still a table for screen readers", ph.role === "table");
  await shot(page, S, "summary-phone", r);
  await openPage(page, S.base, `/builds/${S.errors.build}`);
  await page.waitForSelector(".logview[data-fetched]", { timeout: 10000 });
  await shot(page, S, "build-phone", r);
  await page.setViewportSize(DESKTOP);
  await page.emulateMedia({ colorScheme: "dark" });
  await openPage(page, S.base, "/waterfall");
  await shot(page, S, "waterfall-dark", r);
  await openPage(page, S.base, `/builds/${S.errors.build}`);
  await page.waitForSelector(".logview[data-fetched]", { timeout: 10000 });
  await shot(page, S, "build-dark", r);
  r.noProblems(page, "layout");
}

// --- down: the master stops and comes back with the page open ---

// Asks test_browser.py to do something (stop or start the master) and
// waits until it says it is done.
async function action(S, name, timeoutMs) {
  const ack = join(S.signals, `ack-${name}`);
  console.log(`ACTION ${name}`);
  await until(`test_browser.py to ${name}`, async () => existsSync(ack), { timeout: timeoutMs, interval: 100 });
}

export async function groupDown(r, ctx, S) {
  const SCALE = Math.max(1, S.timeout_scale || 1);
  // While the master is down every request fails: that is the point.
  const page = await newPage(ctx, { allow: (t) => /ERR_CONNECTION_REFUSED|ERR_CONNECTION_RESET|ERR_EMPTY_RESPONSE|WebSocket|net::ERR/.test(t) });
  await page.setViewportSize(DESKTOP);
  // A running build, so the summary shows a clock that counts.
  const forced = await api(S.base, "/builders/slow/force", { method: "POST", token: S.token, body: { reason: "runs while the master is down" } });
  const bid = await until("the slow build to start", async () => (await api(S.base, `/requests/${forced.json.request_id}`)).json.build_id, { timeout: 20000 });
  await until("the slow build to run", async () => (await api(S.base, `/builds/${bid}`)).json.state === "running");
  await openPage(page, S.base, "/");
  const clock = 'tr[data-builder="slow"] .elapsed';
  await page.waitForSelector(clock, { timeout: 10000 });
  const t0 = await text(page, clock);
  await sleep(1500);
  r.check("down: the elapsed time counts while the master is up", (await text(page, clock)) !== t0);
  r.check("down: no banner while the master is up", await page.isHidden("#banner"));

  await action(S, "stop-master", 60000 * SCALE);
  const tDown = Date.now();
  await page.waitForSelector("#banner:not([hidden])", { timeout: 10000 * SCALE });
  r.measure("banner_after_ms", Date.now() - tDown, "ms");
  const banner = await text(page, "#banner");
  r.check("down: the banner says the master is unreachable, the data stale, retrying", /Master unreachable/.test(banner) && /stale/.test(banner) && /Retrying/.test(banner), banner);
  const bannerBox = await page.$eval("#banner", (b) => b.getBoundingClientRect().top);
  r.check("down: the banner is at the top of the screen", bannerBox < 120, String(bannerBox));
  r.check("down: the live dot says offline", (await text(page, "#livestate")) === "offline");
  const off = await dotContrast(page);
  r.measure("offline_dot_contrast", Math.round(off.ratio * 100) / 100, ":1");
  r.check("down: the offline dot's contrast is at least 4.5:1", off.ratio >= 4.5, JSON.stringify(off.dot));
  const frozen = await text(page, clock);
  await sleep(2500);
  r.check("down: the elapsed time stands still", (await text(page, clock)) === frozen, `${frozen} -> ${await text(page, clock)}`);
  await shot(page, S, "master-down", r);
  // On a phone the banner fits the screen and its text wraps.
  await page.setViewportSize(PHONE);
  const pb = await page.$eval("#banner", (b) => ({ right: b.getBoundingClientRect().right, top: b.getBoundingClientRect().top, clipped: b.scrollWidth > b.clientWidth, text: b.innerText }));
  const po = await overflowOf(page);
  r.check("down: on a phone the banner fits the screen, nothing cut", pb.right <= PHONE.width && !pb.clipped && /Master unreachable/.test(pb.text) && po.over <= 0, JSON.stringify({ pb, po }));
  r.check("down: on a phone the banner is on the first screen", pb.top >= 0 && pb.top < PHONE.height / 3, JSON.stringify(pb));
  await page.setViewportSize(DESKTOP);
  // A page opened while the master is down says so, and loads later.
  await page.evaluate(() => {
    location.hash = "#/slaves";
  });
  await page.waitForFunction(() => /Could not load this page/.test(document.querySelector("main").textContent), null, { timeout: 10000 });
  r.check("down: a page opened meanwhile says it could not load", true);

  await action(S, "start-master", 60000 * SCALE);
  const tUp = Date.now();
  await page.waitForSelector("#banner[hidden]", { state: "attached", timeout: 20000 * SCALE });
  r.measure("banner_cleared_after_ms", Date.now() - tUp, "ms");
  r.check("down: the banner clears itself once the master is back", true);
  await page.waitForSelector("#slaves", { timeout: 15000 * SCALE }).catch(() => {});
  r.check("down: the page that could not load loads by itself", (await count(page, "#slaves")) === 1, await text(page, "main"));
  r.check("down: no message still says the master cannot be reached", !/cannot reach the master/.test(await text(page, "body")), await text(page, "body"));
  await page.evaluate(() => {
    location.hash = "#/";
  });
  await page.waitForSelector(clock, { timeout: 15000 * SCALE });
  const t1 = await text(page, clock);
  await sleep(1500);
  r.check("down: the elapsed time counts again", (await text(page, clock)) !== t1);
  await until("the live dot to say live", async () => (await text(page, "#livestate")) === "live", { timeout: 15000 * SCALE }).catch(() => {});
  r.check("down: the live feed is back", (await text(page, "#livestate")) === "live");
  await api(S.base, `/builds/${bid}/cancel`, { method: "POST", token: S.token });
  r.noProblems(page, "down");
}
