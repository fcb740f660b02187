// run.mjs - the browser tests of the status pages. Started by
// tests/integration/test_browser.py (which owns the master and slaves):
//
//   node tests/browser/run.mjs --scenario FILE --only GROUP
//
// FILE is the JSON the Python side wrote (the master's URL, tokens, the ids
// of the builds and jobs it made). GROUP is one of: pages, live, ansi,
// plot, paging, actions, biglog, and those of ux.mjs: buildpage,
// waterfallfit, changes, plotaxes, layout, down; tests (tests_page.mjs);
// and stale (stale.mjs). Each prints "ok"/"FAIL" lines as it goes
// and, last, one line "RESULT {json}" with every check and measurement;
// the exit status is 0 when every check passed.
import { copyFileSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Report, api, goHash, launch, newPage, openPage, until } from "./lib.mjs";
import { groupBuildPage, groupChanges, groupDown, groupLayout, groupPlotAxes, groupWaterfallFit } from "./ux.mjs";
import { groupStale } from "./stale.mjs";
import { groupTests } from "./tests_page.mjs";

function args() {
  const a = process.argv.slice(2);
  const out = {};
  for (let i = 0; i < a.length; i += 2) out[a[i].replace(/^--/, "")] = a[i + 1];
  return out;
}

const opts = args();
const S = JSON.parse(readFileSync(opts.scenario, "utf8"));
const BASE = S.base;
const SCALE = Math.max(1, S.timeout_scale || 1);
const LATENCY_LIMIT = 200 * SCALE;

async function shot(page, name, report) {
  mkdirSync(S.shots, { recursive: true });
  const file = join(S.shots, `${name}.png`);
  await page.screenshot({ path: file, fullPage: false });
  if (S.docs_images) {
    mkdirSync(S.docs_images, { recursive: true });
    copyFileSync(file, join(S.docs_images, `${name}.png`));
  }
  report.note(`screenshot ${file}`);
}

const text = (page, sel) => page.locator(sel).first().innerText();
// Removes the flash messages, so the next wait sees only a new one.
const clearFlash = (page) => page.evaluate(() => document.getElementById("flash").replaceChildren());
const count = (page, sel) => page.locator(sel).count();

// --- pages: every page loads without console errors and shows the data ---

async function groupPages(r, ctx) {
  const page = await newPage(ctx);
  const check = async (what, fn) => {
    try {
      await fn();
    } catch (e) {
      r.check(`${what}: loads`, false, e.stack || e.message);
    }
  };

  await check("summary", async () => {
    const ms = await openPage(page, BASE, "/");
    r.measure("summary_load_ms", ms, "ms");
    const sum = (await api(BASE, "/summary")).json;
    const verdict = await page.getAttribute("#verdict", "data-verdict");
    r.check("summary: verdict matches the API", verdict === sum.verdict, `${verdict} vs ${sum.verdict}`);
    r.check("summary: verdict is failing (flaky failed)", verdict === "failing", verdict);
    for (const b of sum.builders) {
      const n = await count(page, `tr[data-builder="${b.name}"]`);
      r.check(`summary: row for ${b.name}`, n === 1, `${n} rows`);
    }
    r.check("summary: flaky shows its failure", /failure/i.test(await text(page, 'tr[data-builder="flaky"] .last-result')));
    // Who broke it and since when (issue 14.1): the banner names the red
    // builders, the row says since which build and the failed step.
    const red = (sum.failing || []).map((f) => f.name);
    r.check("summary: the API lists flaky as failing", red.includes("flaky"), red.join(","));
    const named = await page.locator("#verdict-builders a").allInnerTexts();
    r.check("summary: the banner names every failing builder", named.join(",") === red.join(","), `${named} vs ${red}`);
    const flaky = sum.builders.find((b) => b.name === "flaky");
    const since = await text(page, 'tr[data-builder="flaky"] .failing-since');
    r.check("summary: flaky's row says red since its first red build", since.includes(`red since #${flaky.failing_since.number}`), since);
    r.check("summary: flaky's row names the failed step", flaky.failed_step && since.includes(`failed step: ${flaky.failed_step.name}`), since);
    r.check("summary: a green builder has no 'red since'", (await count(page, 'tr[data-builder="quick"] .failing-since')) === 0);
    // A builder a commit broke: its row names the commit's author as the
    // suspect, as the API does.
    const X = S.broken;
    const xb = sum.builders.find((b) => b.name === X.builder);
    const xf = (sum.failing || []).find((f) => f.name === X.builder);
    r.check(`summary: the API names ${X.suspect} as ${X.builder}'s suspect`, !!xf && xf.suspects.map((s) => s.author).join(",") === X.suspect && xb.suspects.map((s) => s.author).join(",") === X.suspect, JSON.stringify(xf));
    const xline = await text(page, `tr[data-builder="${X.builder}"] .failing-since`);
    r.check(
      `summary: ${X.builder}'s row says red since its first red build, the failed step and the suspect`,
      xline.includes(`red since #${xb.failing_since.number}`) && xline.includes(`failed step: ${X.step}`) && xline.includes(`suspects: ${X.suspect}`),
      xline,
    );
    r.check(`summary: ${X.builder}'s "red since" links that build's page`, (await page.getAttribute(`tr[data-builder="${X.builder}"] .failing-since a`, "href")) === `#/builds/${X.since}`);
    r.check("summary: mac-only is offline", (await page.getAttribute('tr[data-builder="mac-only"]', "data-state")) === "offline");
    r.check("summary: mac-only shows 1 pending", /1 pending/.test(await text(page, 'tr[data-builder="mac-only"] .state')));
    await shot(page, "summary", r);
    r.noProblems(page, "summary");
  });

  await check("waterfall", async () => {
    await goHash(page, "/waterfall");
    const n = Number(await page.getAttribute("main .page", "data-builds"));
    r.check("waterfall: shows builds", n >= 20, `${n} builds`);
    const box = `.wbox[data-build="${S.flaky.build}"]`;
    r.check("waterfall: the flaky build is red", (await page.getAttribute(box, "class")).includes("r-failure"));
    r.check("waterfall: its failing step is listed", (await count(page, `${box} li.wstep.r-failure`)) === 1);
    const cols = await page.locator("#waterfall thead th[data-builder]").allInnerTexts();
    r.check("waterfall: a column per builder", ["quick", "colours", "flaky", "live", "big", "app", "mac-only"].every((b) => cols.includes(b)), cols.join(","));
    await shot(page, "waterfall", r);
    r.noProblems(page, "waterfall");
  });

  await check("console", async () => {
    await goHash(page, "/console");
    const row = `tr[data-kind="job"][data-id="${S.job_patch}"]`;
    r.check("console: a row for the try job", (await count(page, row)) === 1);
    r.check("console: its title is the description", (await text(page, `${row} .ctitle`)).includes("Make hello louder"));
    r.check("console: its app cell is a success", (await count(page, `${row} td.ccell.r-success`)) === 2);
    r.check("console: the waiting job has a pending cell", (await count(page, `tr[data-id="${S.job_waiting}"] td.ccell.r-pending`)) === 1);
    await shot(page, "console", r);
    r.noProblems(page, "console");
  });

  await check("builder", async () => {
    await goHash(page, "/builders/quick");
    const rows = await count(page, "#recent-builds tr[data-build]");
    r.check("builder: recent builds listed (first page of 25)", rows === 25, `${rows} rows`);
    const slaves = await page.locator("#allowed-slaves li").allInnerTexts();
    r.check("builder: allowed slaves s1, s2 connected", slaves.length === 2 && slaves.every((s) => /connected/.test(s)), slaves.join("|"));
    await page.waitForSelector("#plots[data-drawn]", { timeout: 10000 });
    r.check("builder: a plot is drawn", (await count(page, "#plots canvas")) >= 1);
    await goHash(page, "/builders/flaky");
    const fb = (await api(BASE, "/builders/flaky")).json;
    const fsince = await text(page, ".failing-since");
    r.check("builder: a red builder says since which build", !!fb.failing_since && fsince.includes(`red since #${fb.failing_since.number}`), fsince);
    await goHash(page, `/builders/${S.broken.builder}`);
    const xsince = await text(page, ".failing-since");
    r.check("builder: a builder a commit broke names the failed step and the suspect", xsince.includes(`failed step: ${S.broken.step}`) && xsince.includes(`suspects: ${S.broken.suspect}`), xsince);
    await goHash(page, "/builders/mac-only");
    r.check("builder: pending request with its position", /^#?1$/.test((await text(page, "#pending-requests tbody tr td")).trim()));
    await goHash(page, "/builders/quick");
    await page.waitForSelector("#plots[data-drawn]", { timeout: 10000 });
    await shot(page, "builder", r);
    r.noProblems(page, "builder");
  });

  await check("build", async () => {
    await goHash(page, `/builds/${S.app_build}`);
    const src = await text(page, "#build-source");
    r.check("build: source shows the review URL", src.includes("https://review.example.org/c/42"), src);
    r.check("build: source shows the author", src.includes("ann@example.org"), src);
    r.check("build: source has a patch download", (await count(page, "#build-source .patch-download")) === 1);
    r.check("build: source shows got_revision", /got revision\s+[0-9a-f]{7,}/.test(src), src);
    const steps = await page.locator("#steps tbody tr").count();
    const b = (await api(BASE, `/builds/${S.app_build}`)).json;
    r.check("build: one row per step", steps === b.steps.length, `${steps} vs ${b.steps.length}`);
    r.check("build: properties listed", (await text(page, "#properties")).includes("buildnumber"));
    await page.waitForSelector(".logview[data-fetched]", { timeout: 10000 });
    r.check("build: the log shows the patched file", (await text(page, "pre.log")).includes("HELLO, LOUDER"));
    // Each step offers its raw log: the link is the API's log, and what
    // it serves is that step's bytes.
    const rawHref = await page.getAttribute('#steps tr[data-step="1"] a[download]', "href");
    r.check("build: raw download link of a step", !!rawHref && rawHref.endsWith(`/api/v1/builds/${S.app_build}/steps/1/log`), String(rawHref));
    if (rawHref) {
      const raw = await (await fetch(rawHref)).text();
      const viaApi = (await api(BASE, `/builds/${S.app_build}/steps/1/log`)).text;
      r.check("build: raw download is the whole log", raw.length > 0 && raw === viaApi, `${raw.length} vs ${viaApi.length}`);
    }
    await shot(page, "build", r);
    await goHash(page, `/builds/${S.flaky.build}`);
    await page.waitForSelector(".logview[data-fetched]", { timeout: 10000 });
    r.check("build: a failed build opens on its failing step", (await page.getAttribute(".logview", "data-step")) === "1");
    r.check("build: failing step info text", (await text(page, '#steps tr[data-step="1"] .step-text')).includes("exit 1"));
    await shot(page, "build-failed", r);
    r.noProblems(page, "build");
  });

  await check("slaves", async () => {
    await goHash(page, "/slaves");
    r.check("slaves: s1 connected", (await page.getAttribute('tr[data-slave="s1"]', "data-connected")) === "1");
    r.check("slaves: mac1 offline", (await page.getAttribute('tr[data-slave="mac1"]', "data-connected")) === "0");
    r.check("slaves: platform shown", (await text(page, 'tr[data-slave="s1"]')).includes("linux"));
    const s1 = (await api(BASE, "/slaves/s1")).json;
    const row = await text(page, 'tr[data-slave="s1"]');
    r.check("slaves: tags shown", (s1.tags || []).length > 0 && s1.tags.every((t) => row.includes(t)), `${JSON.stringify(s1.tags)} in ${row}`);
    const done = await page.locator('tr[data-slave="s1"] td.num').innerText();
    r.check("slaves: builds done", done.trim() === String(s1.builds_done) && s1.builds_done >= 1, `${done} vs ${s1.builds_done}`);
    r.check("slaves: mac1 last seen", !(await text(page, 'tr[data-slave="mac1"]')).includes("now"));
    await shot(page, "slaves", r);
    await goHash(page, "/slaves/s1");
    r.check("slave: connection history", (await count(page, '#slave-events tr[data-event="connected"]')) >= 1);
    r.check("slave: recent builds", (await count(page, "#slave-builds tbody tr")) >= 1);
    await shot(page, "slave", r);
    r.noProblems(page, "slaves");
  });

  await check("jobs", async () => {
    await goHash(page, "/jobs");
    const q = await text(page, "#queue");
    r.check("jobs: the queue shows the waiting request with its position", /mac-only\s+#1/.test(q), q);
    r.check("jobs: both jobs listed", (await count(page, `#jobs tr[data-job="${S.job_patch}"]`)) === 1 && (await count(page, `#jobs tr[data-job="${S.job_waiting}"]`)) === 1);
    await shot(page, "jobs", r);
    await goHash(page, `/jobs/${S.job_patch}`);
    r.check("job: a row per builder", (await count(page, "#job-builders tr[data-builder]")) === 2);
    r.check("job: each builder's build linked", (await count(page, "#job-builders a.build-link")) === 2);
    r.check("job: review URL", (await text(page, "#job-info")).includes("review.example.org"));
    await shot(page, "job", r);
    r.noProblems(page, "jobs");
  });
  await page.close();
}

// --- live: output on the build page and the waterfall colour, timed ---

async function groupLive(r, ctx) {
  const go = join(S.signals, "go");
  const end = join(S.signals, "end");
  for (const f of [go, end]) {
    try {
      unlinkSync(f);
    } catch {
      /* not there */
    }
  }
  const forced = await api(BASE, "/builders/live/force", { method: "POST", token: S.token, body: { reason: "live test" } });
  r.check("live: force accepted", forced.status === 201, forced.text);
  const reqId = forced.json.request_id;
  const buildId = await until("the live build to start", async () => (await api(BASE, `/requests/${reqId}`)).json.build_id);

  // The waterfall first, so it sees the build running.
  const wf = await newPage(ctx);
  // When each "finished" event reached the page's live link, so a slow
  // box says whether the time went before the page (master, network) or
  // in it.
  await wf.addInitScript(() => {
    const Native = window.WebSocket;
    window.__finishedIn = [];
    window.WebSocket = class extends Native {
      constructor(...a) {
        super(...a);
        this.addEventListener("message", (m) => {
          if (typeof m.data === "string" && m.data.includes('"event":"finished"')) window.__finishedIn.push({ t: Date.now(), data: m.data.slice(0, 200) });
        });
      }
    };
  });
  await openPage(wf, BASE, "/waterfall");
  const box = `.wbox[data-build="${buildId}"]`;
  await wf.waitForSelector(box, { timeout: 10000 });
  await wf.evaluate((sel) => {
    window.__changes = [];
    const el = document.querySelector(sel);
    const note = () => window.__changes.push({ t: Date.now(), cls: el.className });
    note();
    new MutationObserver(note).observe(el, { attributes: true, attributeFilter: ["class"] });
  }, box);

  const bp = await newPage(ctx);
  await openPage(bp, BASE, `/builds/${buildId}`);
  await bp.waitForSelector('.logview[data-step="1"][data-following="1"]', { timeout: 15000 });
  await bp.evaluate(() => {
    window.__marks = {};
    const pre = document.querySelector("pre.log");
    const scan = () => {
      const now = Date.now();
      for (const m of pre.textContent.matchAll(/MARK-(\d) (\d{13})/g)) {
        if (!window.__marks[m[1]]) window.__marks[m[1]] = { printed: Number(m[2]), shown: now };
      }
    };
    new MutationObserver(scan).observe(pre, { childList: true, subtree: true, characterData: true });
  });
  r.check("live: the waterfall box runs", (await wf.getAttribute(box, "class")).includes("r-running"));

  // The 200 ms are those of a page on screen. Chromium runs the renderer
  // of a tab that is not in front at a lower CPU priority (nice 5 on
  // Linux), which on a loaded machine alone costs a few hundred ms: each
  // page is in front while its latency is measured.
  await bp.bringToFront();
  writeFileSync(go, "");
  const marks = await until("5 markers on the build page", () => bp.evaluate(() => (Object.keys(window.__marks).length >= 5 ? window.__marks : null)), { timeout: 15000 });
  const lat = Object.values(marks).map((m) => m.shown - m.printed);
  lat.sort((a, b) => a - b);
  r.measure("log_latency_ms", lat.join(" "), "ms");
  r.measure("log_latency_max_ms", lat[lat.length - 1], "ms");
  r.measure("log_latency_median_ms", lat[Math.floor(lat.length / 2)], "ms");
  r.check(`live: every marker shown within ${LATENCY_LIMIT} ms of being printed`, lat[lat.length - 1] <= LATENCY_LIMIT, lat.join(", "));
  const fetchedBefore = Number(await bp.getAttribute(".logview", "data-fetched"));
  r.check("live: the markers came by the live feed (no refetch)", fetchedBefore === 0, `fetched ${fetchedBefore} bytes by range`);
  await shot(bp, "build-live", r);
  await shot(wf, "waterfall-live", r);

  await wf.bringToFront();
  writeFileSync(end, "");
  const done = await until("the waterfall box to turn green", () => wf.evaluate(() => window.__changes.find((c) => c.cls.includes("r-success"))), { timeout: 15000 });
  const b = await until("the build to finish", async () => {
    const x = (await api(BASE, `/builds/${buildId}`)).json;
    return x.state === "finished" && x;
  });
  const wfLat = done.t - b.finished_ms;
  const arrived = (await wf.evaluate(() => window.__finishedIn)).find((e) => e.data.includes(`"id":${buildId},`));
  const split = arrived ? `; the event reached the page after ${arrived.t - b.finished_ms} ms, the box changed ${done.t - arrived.t} ms after that` : "; the event was not seen arriving";
  r.measure("waterfall_latency_ms", wfLat, "ms");
  if (arrived) r.measure("waterfall_event_arrival_ms", arrived.t - b.finished_ms, "ms");
  r.check(`live: the waterfall box changed colour within ${LATENCY_LIMIT} ms of the build's end`, wfLat <= LATENCY_LIMIT, `${wfLat} ms${split}`);
  r.check("live: the box had been running before", done.t > 0 && (await wf.evaluate(() => window.__changes[0].cls)).includes("r-running"));
  await bp.waitForSelector('#build-result[data-result="SUCCESS"]', { timeout: 10000 });
  r.check("live: the build page shows the result without reload", true);
  r.check("live: the log kept the last line", (await text(bp, "pre.log")).includes("finished"));
  r.noProblems(bp, "live build page");
  r.noProblems(wf, "live waterfall");
}

// --- ansi: colours render, HTML and scripts stay text ---

async function groupAnsi(r, ctx) {
  const page = await newPage(ctx);
  await openPage(page, BASE, `/builds/${S.colours.build}/steps/0`);
  await page.waitForSelector("pre.log span", { timeout: 10000 });
  const colourOf = (t) =>
    page.evaluate((tt) => {
      const span = [...document.querySelectorAll("pre.log span")].find((s) => s.textContent === tt);
      if (!span) return null;
      const cs = getComputedStyle(span);
      return { color: cs.color, bg: cs.backgroundColor, weight: cs.fontWeight, cls: span.className };
    }, t);
  const red = await colourOf("RED-TEXT");
  r.check("ansi: 31 is red", red && red.color === "rgb(205, 49, 49)", JSON.stringify(red));
  const bold = await colourOf("BOLD-GREEN");
  r.check("ansi: 1;32 is bold green", bold && bold.color === "rgb(13, 188, 121)" && Number(bold.weight) >= 700, JSON.stringify(bold));
  const orange = await colourOf("ORANGE-208");
  r.check("ansi: 38;5;208 is orange", orange && orange.color === "rgb(255, 135, 0)", JSON.stringify(orange));
  const tc = await colourOf("TRUE-COLOUR");
  r.check("ansi: 38;2;10;20;30 is that colour", tc && tc.color === "rgb(10, 20, 30)", JSON.stringify(tc));
  const bb = await colourOf("BRIGHT-BLUE");
  r.check("ansi: 94 is bright blue", bb && bb.color === "rgb(59, 142, 234)", JSON.stringify(bb));
  const rb = await colourOf("RED-BACK");
  r.check("ansi: 41 is a red background", rb && rb.bg === "rgb(205, 49, 49)", JSON.stringify(rb));
  // The builder's own error_patterns (["plain"]) decide the error lines.
  const bi = (await api(BASE, "/builders/colours")).json;
  r.check("ansi: the API gives the builder's own error patterns", JSON.stringify(bi.error_patterns) === '["plain"]', JSON.stringify(bi.error_patterns));
  const errs = await page.evaluate(() => [...document.querySelectorAll("pre.log .ll.err")].map((l) => l.textContent));
  r.check("ansi: the log marks the lines its builder's pattern matches, and only those", errs.length === 1 && errs[0].includes("RED-TEXT plain BOLD-GREEN"), JSON.stringify(errs));
  r.check("ansi: and counts them", /^1 error line\b/.test(await text(page, ".log-errors")), await text(page, ".log-errors"));
  const all = await text(page, "pre.log");
  r.check("ansi: no escape character is shown", !all.includes("\x1b"), JSON.stringify(all.slice(0, 300)));
  r.check("ansi: erase-line and OSC title removed", all.includes("erased line") && !all.includes("window title"), all);
  r.check("ansi: the HTML shows as text", all.includes('<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'), all);
  r.check("ansi: no element came from the log", (await count(page, "pre.log script, pre.log img")) === 0);
  r.check("ansi: a bad byte shows as U+FFFD", all.includes("bad byte: \uFFFD end"), JSON.stringify(all));
  const reason = await text(page, "#build-info");
  r.check("ansi: the reason's HTML shows as text", reason.includes("<b>bold</b><img src=x onerror=window.__xss=3>"), reason);
  r.check("ansi: no element came from the reason", (await count(page, "#build-info b, #build-info img")) === 0);
  await page.waitForTimeout(200);
  r.check("ansi: nothing executed", (await page.evaluate(() => window.__xss)) === undefined);
  await page.fill(".log-search", "red-text");
  await page.press(".log-search", "Enter");
  r.check("ansi: search finds the text (case-insensitive)", (await text(page, ".log-hits")) === "1 of 1", await text(page, ".log-hits"));
  r.check("ansi: the match is marked", (await text(page, "mark.hit.current")) === "RED-TEXT");
  await shot(page, "build-ansi", r);
  r.noProblems(page, "ansi");
}

// --- plot: the builder page draws uPlot charts ---

async function groupPlot(r, ctx) {
  const page = await newPage(ctx);
  await openPage(page, BASE, "/builders/quick");
  await page.waitForSelector("#plots[data-drawn]", { timeout: 10000 });
  const canvases = await page.evaluate(() =>
    [...document.querySelectorAll("#plots canvas")].map((c) => {
      const g = c.getContext("2d");
      const d = g.getImageData(0, 0, c.width, c.height).data;
      let ink = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) ink++;
      const rect = c.getBoundingClientRect();
      return { w: rect.width, h: rect.height, ink };
    }),
  );
  r.check("plot: at least one canvas", canvases.length >= 1, JSON.stringify(canvases));
  r.check("plot: every canvas has a size", canvases.every((c) => c.w > 100 && c.h > 50), JSON.stringify(canvases));
  r.check("plot: something is drawn on it", canvases.every((c) => c.ink > 500), JSON.stringify(canvases));
  const titles = await page.locator("#plots .u-title").allInnerTexts();
  r.check("plot: the build duration plot", titles.includes("build duration"), titles.join(","));
  // The builder's steps print a @@@TF_STAT tests_run=N@@@ marker: the
  // stats API has that series and the page plots it.
  const st = (await api(BASE, "/builders/quick/stats")).json;
  const series = (st.stats && st.stats.tests_run) || [];
  r.check("plot: the stats API has the tests_run series", series.length >= 1, JSON.stringify(st.stats || {}).slice(0, 200));
  r.check("plot: a plot of the stat tests_run", titles.includes("tests_run"), titles.join(","));
  r.measure("plots", canvases.length);
  r.noProblems(page, "plot");
}

// --- paging: the waterfall goes back through history page by page ---

async function groupPaging(r, ctx) {
  const page = await newPage(ctx);
  const all = (await api(BASE, "/waterfall", {})).json;
  const everything = await (async () => {
    let ids = [];
    let before = null;
    for (;;) {
      const p = (await api(BASE, `/waterfall?limit=500${before ? `&before=${before}` : ""}`)).json;
      ids = ids.concat(p.builds.map((b) => b.id));
      if (p.next_before === null) return ids;
      before = p.next_before;
    }
  })();
  r.check("paging: the API has more than 2 pages of 10", everything.length > 20, `${everything.length} (first page ${all.builds.length})`);
  await openPage(page, BASE, "/waterfall?limit=10");
  const shown = () => page.getAttribute("main .page", "data-builds").then(Number);
  r.check("paging: the first page has 10 builds", (await shown()) === 10, String(await shown()));
  let pages = 1;
  // The button is disabled while a page loads (aria-busy) and for good
  // when there is no older build: wait for the load to end either way.
  const busy = async () => (await page.getAttribute("#older", "aria-busy")) === "true";
  while (!(await page.isDisabled("#older"))) {
    const before = await shown();
    await page.click("#older");
    await until("the next page", async () => !(await busy()) && ((await shown()) > before || (await page.isDisabled("#older"))), { timeout: 10000 });
    pages++;
    if (pages > 100) break;
  }
  const ids = await page.evaluate(() => [...document.querySelectorAll(".wbox[data-build]")].map((b) => Number(b.dataset.build)));
  const missing = everything.filter((id) => !ids.includes(id));
  r.check("paging: paged back to the oldest build", missing.length === 0, `missing ${missing.join(",")}`);
  r.check("paging: no build twice", new Set(ids).size === ids.length);
  r.check("paging: several pages", pages >= 3, `${pages} pages`);
  r.measure("waterfall_pages", pages);
  // Rows are in time order: everything in a row is newer than everything
  // below it.
  const rows = await page.evaluate(() =>
    [...document.querySelectorAll("#waterfall tbody tr")].map((tr) => [...tr.querySelectorAll(".wbox")].map((b) => Number(b.dataset.created))),
  );
  const bad = rows.findIndex((row, i) => i + 1 < rows.length && Math.min(...row) < Math.max(...rows[i + 1]));
  r.check("paging: time flows down (each row newer than the rows below)", rows.length > 1 && bad < 0, `row ${bad}: ${JSON.stringify(rows.slice(Math.max(0, bad), bad + 2))}`);
  r.noProblems(page, "paging");
}

// --- actions: force, cancel, rebuild, cancel a job; refused without a token ---

async function groupActions(r, ctx) {
  // The 401s this test provokes are expected; so is a 404 for rebuild on
  // a master that does not have that endpoint yet (noted below).
  const eps = (await api(BASE, "")).json.endpoints;
  const hasRebuild = eps.includes("POST /api/v1/builds/{id}/rebuild");
  const expected = (t) => /status of 401/.test(t) || (!hasRebuild && /status of 404/.test(t) && /rebuild/.test(t));
  const page = await newPage(ctx, { allow: expected });
  await openPage(page, BASE, "/builders/slow");
  await page.evaluate(() => localStorage.clear());

  // Without a token: force is refused with the API's message.
  const refusal = await api(BASE, "/builders/slow/force", { method: "POST", body: {} });
  r.check("actions: the API refuses force without a token", refusal.status === 401, refusal.text);
  const msg = refusal.json.error.message;
  await page.fill(".force-form .reason", "should not happen");
  await clearFlash(page);
  await page.click(".force-form button[type=submit]");
  await page.waitForSelector(".flash-error", { timeout: 5000 });
  const f1 = await text(page, ".flash-error .flash-text");
  r.check("actions: force without a token shows the API's message", f1.includes(msg), `${f1} / ${msg}`);
  const reqs = (await api(BASE, "/requests?builder=slow")).json.requests;
  r.check("actions: nothing was queued", reqs.length === 0, JSON.stringify(reqs));

  // A running build; cancel without a token is refused.
  const forced = await api(BASE, "/builders/slow/force", { method: "POST", token: S.token, body: { reason: "to be cancelled" } });
  const bid = await until("the slow build to start", async () => (await api(BASE, `/requests/${forced.json.request_id}`)).json.build_id);
  await until("the slow build to run", async () => (await api(BASE, `/builds/${bid}`)).json.state === "running");
  await goHash(page, `/builds/${bid}`);
  await clearFlash(page);
  await page.click(".cancel-build");
  await page.click(".cancel-build"); // confirm
  await page.waitForSelector(".flash-error", { timeout: 5000 });
  r.check("actions: cancel without a token is refused", (await text(page, ".flash-error .flash-text")).includes("Cancel build refused"));
  r.check("actions: the build still runs", (await api(BASE, `/builds/${bid}`)).json.state === "running");

  // A wrong token is refused at login.
  await page.fill("#token", "not-a-token");
  await clearFlash(page);
  await page.click("#loginform button");
  await page.waitForSelector(".flash-error", { timeout: 5000 });
  r.check("actions: a wrong token is refused at login", (await text(page, ".flash-error .flash-text")).startsWith("Login refused"));
  r.check("actions: still logged out", (await count(page, "#loginform")) === 1);

  // Log in with the admin token.
  await page.fill("#token", S.token);
  await clearFlash(page);
  await page.click("#loginform button");
  await page.waitForSelector("#logout", { timeout: 5000 });
  r.check("actions: logged in", (await text(page, ".who")).includes("admin"));
  r.check("actions: the token is kept in localStorage", (await page.evaluate(() => localStorage.getItem("tf-token"))) === S.token);

  // Cancel works now, and the page shows it without reload.
  await clearFlash(page);
  await page.click(".cancel-build");
  await page.click(".cancel-build");
  await page.waitForSelector('#build-result[data-result="CANCELLED"]', { timeout: 15000 });
  // The live event can reach the page a moment before the build's end is
  // committed and read back by the API (slow under ASan): wait for it.
  const cancelled = await until("the API to show the build cancelled", async () => (await api(BASE, `/builds/${bid}`)).json.result === "CANCELLED", { timeout: 10000 }).catch(() => false);
  r.check("actions: cancel works for a logged-in user", cancelled === true);
  await shot(page, "build-cancelled", r);

  // Force from the builder page.
  await goHash(page, "/builders/quick");
  await page.fill(".force-form .reason", "forced from the browser");
  await clearFlash(page);
  await page.click(".force-form button[type=submit]");
  await page.waitForSelector(".flash-ok", { timeout: 5000 });
  const f2 = await text(page, ".flash-ok .flash-text");
  const m = /Request (\d+) queued/.exec(f2);
  r.check("actions: force works for a logged-in user", !!m, f2);
  if (m) {
    const req = (await api(BASE, `/requests/${m[1]}`)).json;
    r.check("actions: the request has the reason", req.reason === "forced from the browser", JSON.stringify(req));
    await until("the forced build to show on the builder page", async () => (await text(page, "#recent-builds")).includes("forced from the browser"), { timeout: 15000 });
    r.check("actions: the builder page shows the new build", true);
  }

  // Rebuild.
  await goHash(page, `/builds/${S.flaky.build}`);
  await clearFlash(page);
  await page.click(".rebuild");
  await page.waitForSelector(".flash-ok, .flash-error", { timeout: 5000 });
  const f3 = await text(page, "#flash .flash-text");
  if (hasRebuild) {
    r.check("actions: rebuild queues a request", /Request \d+ queued for flaky/.test(f3), f3);
  } else {
    r.note(`POST /api/v1/builds/{id}/rebuild is not listed by the master; the page said: ${f3}`);
    r.check("actions: rebuild shows the master's answer", f3.length > 0, f3);
  }

  // Cancel a try job (pending: its builder's only slave never connects).
  const job = await api(BASE, "/jobs", { method: "POST", token: S.user_token, body: { builders: ["mac-only"], patch: "", description: "cancel me" } });
  r.check("actions: a job to cancel", job.status === 201, job.text);
  await goHash(page, `/jobs/${job.json.job_id}`);
  await clearFlash(page);
  await page.click(".cancel-job");
  // A live event redraws the page between the click and its confirmation
  // (a build forced elsewhere): the confirmation must not be lost.
  await page.evaluate(() => {
    document.getElementById("job-info").dataset.old = "1";
  });
  await api(BASE, "/builders/quick/force", { method: "POST", token: S.token, body: { reason: "redraw the job page" } });
  const redrawn = await page.waitForFunction(() => !document.querySelector("#job-info[data-old]"), null, { timeout: 10000 }).then(() => true, () => false);
  r.check("actions: a live event redrew the job page", redrawn);
  r.check("actions: the cancel button still asks for its confirmation", (await text(page, ".cancel-job")) === "Really cancel?", await text(page, ".cancel-job"));
  await page.click(".cancel-job");
  await until("the job to be cancelled", async () => {
    const st = (await api(BASE, `/jobs/${job.json.job_id}`)).json.state;
    return st === "cancelled" || st === "finished";
  });
  await page.waitForSelector("#job-result .r-cancelled", { timeout: 10000 });
  r.check("actions: cancel job works and the page shows it", true);

  // Log out: actions are refused again.
  await page.click("#logout");
  await page.waitForSelector("#loginform", { timeout: 5000 });
  r.check("actions: logged out", (await page.evaluate(() => localStorage.getItem("tf-token"))) === null);
  r.noProblems(page, "actions");
}

// --- biglog: a 200 MB log loads its tail only and stays responsive ---

async function groupBigLog(r, ctx) {
  const page = await newPage(ctx);
  let fetched = 0;
  let requests = 0;
  page.on("response", (resp) => {
    if (/\/steps\/\d+\/log/.test(resp.url())) {
      requests++;
      fetched += Number(resp.headers()["content-length"] || 0);
    }
  });
  // Start the browser on another page, so the time measured is the log
  // viewer's, not Chromium's first start.
  await openPage(page, BASE, "/");
  const t0 = Date.now();
  await goHash(page, `/builds/${S.big.build}/steps/0`);
  await page.waitForSelector(".logview[data-fetched]", { timeout: 15000 });
  await page.waitForFunction(() => document.querySelector("pre.log").textContent.includes("END-OF-BIG-LOG"), null, { timeout: 15000 });
  const shownMs = Date.now() - t0;
  r.measure("log_size_bytes", S.big.size);
  r.measure("time_to_tail_ms", shownMs, "ms");
  r.measure("initial_bytes_fetched", fetched, "bytes");
  r.measure("initial_log_requests", requests);
  r.check("biglog: the tail is shown", true);
  r.check("biglog: at most 128 KiB fetched to show the tail", fetched <= 128 * 1024, `${fetched} bytes`);
  r.check(`biglog: shown within ${3000 * SCALE} ms`, shownMs <= 3000 * SCALE, `${shownMs} ms`);
  const d = await page.evaluate(() => ({ ...document.querySelector(".logview").dataset }));
  r.check("biglog: the window ends at the log's end", Number(d.hi) === S.big.size && Number(d.size) === S.big.size, JSON.stringify(d));

  // Responsive: a frame comes quickly and the heap stays small.
  const frame = await page.evaluate(() => {
    const t = performance.now();
    return new Promise((res) => requestAnimationFrame(() => setTimeout(() => res(performance.now() - t), 0)));
  });
  r.measure("frame_after_load_ms", frame, "ms");
  r.check("biglog: a frame within 100 ms", frame < 100 * SCALE, `${frame} ms`);
  const heap = await page.evaluate(() => (performance.memory ? performance.memory.usedJSHeapSize : 0));
  r.measure("js_heap_mb", heap / 1048576, "MiB");
  r.check("biglog: JS heap under 64 MiB", heap < 64 * 1048576, `${heap}`);

  // Load earlier twice: the window grows backwards by at most 256 KiB each.
  const lo0 = Number(d.lo);
  for (let i = 0; i < 2; i++) {
    const lo = Number(await page.getAttribute(".logview", "data-lo"));
    await page.click("text=Load earlier");
    await page.waitForFunction((l) => Number(document.querySelector(".logview").dataset.lo) < l, lo, { timeout: 10000 });
  }
  const lo2 = Number(await page.getAttribute(".logview", "data-lo"));
  r.check("biglog: load earlier grows the window backwards", lo2 < lo0 && lo0 - lo2 <= 2 * 256 * 1024, `${lo0} -> ${lo2}`);
  r.check("biglog: the tail is still there", (await text(page, "pre.log")).includes("END-OF-BIG-LOG"));

  // Search within what is loaded.
  await page.fill(".log-search", "END-OF-BIG-LOG");
  const t1 = Date.now();
  await page.press(".log-search", "Enter");
  await page.waitForFunction(() => document.querySelector(".log-hits").textContent !== "", null, { timeout: 10000 });
  r.measure("search_ms", Date.now() - t1, "ms");
  r.check("biglog: search finds the last line once", (await text(page, ".log-hits")) === "1 of 1", await text(page, ".log-hits"));
  await page.fill(".log-search", "lazy dog");
  await page.press(".log-search", "Enter");
  const many = await text(page, ".log-hits");
  r.check("biglog: search counts many matches", /^1 of \d{3,}\+?$/.test(many), many);

  // Jump to start, load later, jump to end.
  await page.click("text=Jump to start");
  await page.waitForFunction(() => document.querySelector(".logview").dataset.lo === "0", null, { timeout: 10000 });
  r.check("biglog: jump to start shows the first line", (await page.evaluate(() => document.querySelector("pre.log").textContent.slice(0, 19))) === "the quick brown fox");
  const hi0 = Number(await page.getAttribute(".logview", "data-hi"));
  await page.click("text=Load later");
  await page.waitForFunction((h) => Number(document.querySelector(".logview").dataset.hi) > h, hi0, { timeout: 10000 });
  r.check("biglog: load later grows the window forwards", true);
  await page.click("text=Jump to end");
  await page.waitForFunction((s) => Number(document.querySelector(".logview").dataset.hi) === s, S.big.size, { timeout: 10000 });
  r.check("biglog: jump to end is back at the end", (await text(page, "pre.log")).includes("END-OF-BIG-LOG"));
  r.measure("total_bytes_fetched", fetched, "bytes");
  r.check("biglog: under 2 MiB fetched in all", fetched < 2 * 1048576, `${fetched}`);
  await shot(page, "build-biglog", r);
  r.noProblems(page, "biglog");
}

const GROUPS = {
  pages: groupPages,
  live: groupLive,
  ansi: groupAnsi,
  plot: groupPlot,
  paging: groupPaging,
  actions: groupActions,
  biglog: groupBigLog,
  buildpage: (r, ctx) => groupBuildPage(r, ctx, S),
  waterfallfit: (r, ctx) => groupWaterfallFit(r, ctx, S),
  changes: (r, ctx) => groupChanges(r, ctx, S),
  plotaxes: (r, ctx) => groupPlotAxes(r, ctx, S),
  layout: (r, ctx) => groupLayout(r, ctx, S),
  down: (r, ctx) => groupDown(r, ctx, S),
  tests: (r, ctx) => groupTests(r, ctx, S),
  stale: (r, ctx) => groupStale(r, ctx, S),
};

async function main() {
  const names = opts.only ? opts.only.split(",") : Object.keys(GROUPS);
  let ok = true;
  for (const name of names) {
    const fn = GROUPS[name];
    const r = new Report(name);
    if (!fn) {
      r.check(`known group ${name}`, false, `groups: ${Object.keys(GROUPS).join(", ")}`);
    } else {
      const b = await launch();
      try {
        await fn(r, b.context);
      } catch (e) {
        r.check(`${name} ran to the end`, false, e.stack || e.message);
      } finally {
        await b.close();
      }
    }
    ok = ok && r.ok;
    console.log(`RESULT ${JSON.stringify({ group: name, ok: r.ok, checks: r.checks, measures: r.measures, notes: r.notes })}`);
  }
  process.exit(ok ? 0 : 1);
}

main();
