// stale.mjs - the browser test of a stale hot answer fetched again
// (docs/api.md, "cached answers"; web/lib/api.js). run.mjs registers
// this group as "stale"; tests/integration/test_browser.py gives it a
// master of its own (stale_site): builder "gate" on slave s1, whose one
// step waits for the file SIGNALS/open-NUMBER, and builder "noise" whose
// only slave never connects.
//
// An answer asked for 64+ times in 2 s is rendered again at most every
// 100 ms; meanwhile it is served as it was, with "X-TF-Stale: 1". A page
// whose fetch gets such an answer after the last event that changes it
// would keep it (no live event follows to refetch it): api.js asks again
// 150 ms later. The situation, made on purpose:
//
// - this side asks for /builders/gate and /builders/gate/builds all the
//   time (hot), and forces "noise" builds every few ms (each one an event
//   that makes every kept answer stale, so the gate's answers are
//   rendered again every 100 ms and stale in between);
// - the page waits on a page with no live topics (#/none), a probe in it
//   listens to the live feed, and the moment the gate build's "finished"
//   event arrives it opens #/builders/gate: the builder page subscribes
//   only after the last event of that build, so only its own fetches can
//   bring it the finished build;
// - an attempt counts when the page got a stale answer that still showed
//   the build running (its ETag is one of the answers this side saw
//   before the build finished); then the page must show the build
//   finished, without a reload, within 5 s.
//
// Without the second fetch in api.js the page keeps showing the build
// running and the last check fails.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { api, newPage, openPage, until } from "./lib.mjs";

const ATTEMPTS = 8;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Whether an answer of the gate's builder (path: the API path asked)
// still shows build id running, or not finished.
function showsRunning(path, json, id) {
  if (!json) return null;
  if (path.includes("/builds")) {
    const b = (json.builds || []).find((x) => x.id === id);
    return !b || !b.finished_ms;
  }
  return (json.current_builds || []).some((c) => c.id === id) || json.state === "building";
}

// Asks for the page's paths all the time and remembers, per ETag, whether
// the answer showed the build running. stop() ends it.
function hammer(base, paths, seen, counts) {
  let on = true;
  const loops = paths.map(async (p) => {
    while (on) {
      try {
        const r = await fetch(`${base}/api/v1${p}`, { cache: "no-store" });
        const text = await r.text();
        counts.asked++;
        if (r.headers.get("x-tf-stale")) counts.stale++;
        const tag = r.headers.get("etag");
        if (tag && !seen.has(tag)) seen.set(tag, { path: p, json: JSON.parse(text) });
      } catch {
        counts.errors++;
      }
      await sleep(4);
    }
  });
  return async () => {
    on = false;
    await Promise.all(loops);
  };
}

// Forces builds of "noise" (never run: its slave is not there) every few
// ms: each queued request is an event that makes kept answers stale.
function noise(base, token, counts) {
  let on = true;
  const loop = (async () => {
    while (on) {
      const r = await api(base, "/builders/noise/force", { method: "POST", token, body: { reason: "noise" } });
      if (r.status === 201) counts.forced++;
      else counts.refused++;
      await sleep(8);
    }
  })();
  return async () => {
    on = false;
    await loop;
  };
}

export async function groupStale(r, ctx, S) {
  const BASE = S.base;
  const SCALE = Math.max(1, S.timeout_scale || 1);
  const paths = ["/builders/gate", "/builders/gate/builds?limit=25"];
  const seen = new Map(); // ETag -> {path, json}
  const counts = { asked: 0, stale: 0, errors: 0, forced: 0, refused: 0 };
  const stopHammer = hammer(BASE, paths, seen, counts);
  let forced = null;
  try {
    for (let attempt = 1; attempt <= ATTEMPTS && !forced; attempt++) {
      const f = await api(BASE, "/builders/gate/force", { method: "POST", token: S.token, body: { reason: `stale attempt ${attempt}` } });
      if (!r.check(`stale: force gate (attempt ${attempt})`, f.status === 201, f.text)) break;
      const reqId = f.json.request_id;
      const id = await until("the gate build to start", async () => (await api(BASE, `/requests/${reqId}`)).json.build_id, { timeout: 20000 * SCALE });
      const number = (await api(BASE, `/builds/${id}`)).json.number;

      const page = await newPage(ctx);
      await openPage(page, BASE, "/none");
      const answers = [];
      page.on("response", (resp) => {
        const u = new URL(resp.url());
        if (!u.pathname.startsWith("/api/v1/builders/gate")) return;
        const h = resp.headers();
        answers.push({ path: u.pathname.slice("/api/v1".length) + u.search, status: resp.status(), stale: h["x-tf-stale"] === "1", etag: h.etag, t: Date.now() });
      });
      // The probe: its own link to the live feed; on the gate build's
      // "finished" it opens the builder's page at once.
      await page.evaluate(
        ({ buildId }) =>
          new Promise((subscribed, failed) => {
            window.__marker = "no reload";
            const u = new URL("live", document.baseURI);
            u.protocol = "ws:";
            const ws = new WebSocket(u.href, "testfarm-live");
            ws.onopen = () => ws.send(JSON.stringify({ subscribe: ["builds"] }));
            ws.onerror = () => failed(new Error("the probe's live link failed"));
            ws.onmessage = (m) => {
              const ev = JSON.parse(m.data);
              if (ev.type === "subscribed") subscribed();
              if (ev.type === "build" && ev.event === "finished" && ev.build && ev.build.id === buildId) {
                window.__opened = Date.now();
                location.hash = "#/builders/gate";
                ws.close();
              }
            };
          }),
        { buildId: id },
      );
      // Noise, and the hot answers rendered again since it started.
      const stopNoise = noise(BASE, S.token, counts);
      const stale0 = counts.stale;
      await until("the hammered answers to be served stale", async () => counts.stale > stale0 + 5, { timeout: 10000 * SCALE, interval: 20 });
      writeFileSync(join(S.signals, `open-${number}`), "go\n");
      await page.waitForFunction(() => window.__opened, null, { timeout: 20000 * SCALE });
      await page.waitForSelector("main .page[data-ready]", { timeout: 15000 * SCALE, state: "attached" });
      await stopNoise();

      const opened = await page.evaluate(() => window.__opened);
      const staleRunning = answers.filter((a) => a.stale && a.t >= opened && seen.has(a.etag) && showsRunning(a.path, seen.get(a.etag).json, id));
      r.note(`attempt ${attempt} (build ${id}): the page's answers: ${answers.map((a) => `${a.path}${a.stale ? " stale" : ""}${seen.has(a.etag) ? (showsRunning(a.path, seen.get(a.etag).json, id) ? " running" : " finished") : " unseen"}`).join(", ")}`);
      if (!staleRunning.length) {
        await page.close();
        continue;
      }
      forced = { attempt, id, number, page, opened, answers, staleRunning };
    }
    r.measure("attempts", forced ? forced.attempt : ATTEMPTS);
    r.measure("hammer_requests", counts.asked);
    r.measure("hammer_stale_answers", counts.stale);
    r.measure("noise_forces", counts.forced);
    r.check("stale: the hammer's requests all answered", counts.errors === 0 && counts.refused === 0, JSON.stringify(counts));
    if (!r.check(`stale: the page got a stale answer still showing the build running (within ${ATTEMPTS} attempts)`, !!forced, JSON.stringify(counts))) return;

    const { page, id, opened } = forced;
    const limit = 5000 * SCALE;
    let shownAt = null;
    try {
      await page.waitForFunction(
        (bid) => !document.querySelector("#running-builds") && !!document.querySelector(`#recent-builds tr[data-build="${bid}"]`) && document.querySelector("#builder-state").textContent !== "building",
        id,
        { timeout: limit, polling: 20 },
      );
      shownAt = Date.now();
    } catch {
      /* checked below */
    }
    const what = await page.evaluate(() => ({
      state: (document.querySelector("#builder-state") || {}).textContent,
      running: !!document.querySelector("#running-builds"),
      recent: [...document.querySelectorAll("#recent-builds tr[data-build]")].map((t) => t.dataset.build).slice(0, 3),
    }));
    if (shownAt) r.measure("finished_shown_after_ms", shownAt - opened, "ms");
    r.check(`stale: the page shows build ${id} finished within ${limit} ms, without a reload`, !!shownAt, `${JSON.stringify(what)}; answers: ${JSON.stringify(forced.answers)}`);
    // The stale answer was asked for again, and the answer to that showed
    // the build finished (it may be marked stale too while the noise
    // goes on: at most 100 ms old, so after the build's end).
    const [first] = forced.staleRunning;
    const next = forced.answers.find((b) => b.path === first.path && b.t > first.t);
    const nextShows = next && seen.has(next.etag) ? !showsRunning(next.path, seen.get(next.etag).json, id) : null;
    r.check(`stale: ${first.path} was fetched again and then showed the build finished`, !!next && nextShows === true, JSON.stringify(forced.answers));
    r.check("stale: the page was not reloaded", (await page.evaluate(() => window.__marker)) === "no reload");
    r.noProblems(page, "stale");
  } finally {
    await stopHammer();
  }
}
