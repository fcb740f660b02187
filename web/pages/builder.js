// builder.js - one builder: its state, the force form, running builds,
// pending requests with their positions, the slaves allowed to run it,
// plots over its builds (duration always, plus each stat its steps
// report) and its recent builds, paged. Data: GET /api/v1/builders/{name},
// .../builds, .../stats; refreshed after live events of this builder.

import { endpoints, get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { fmtDuration, fmtTime } from "../lib/format.js";
import { drawPlot } from "../lib/plot.js";
import {
  ago,
  badge,
  buildLink,
  buttonKeeper,
  cancelBuildButton,
  cancelRequestButton,
  elapsed,
  failingSince,
  forceForm,
  kv,
  loading,
  section,
  slaveLink,
  tickTimes,
} from "../lib/ui.js";

const PLOT_BUILDS = 200;

export async function render(ctx) {
  const { root } = ctx;
  const name = ctx.params[0];
  const enc = encodeURIComponent(name);
  ctx.title(name);
  loading(root, `builder ${name}`);
  const keep = buttonKeeper();

  const head = h("div");
  const running = h("div");
  const pending = h("div");
  const slavesBox = h("div");
  const plots = h("div", { class: "plots", id: "plots" });
  const buildsBox = h("div");
  const older = h("button", { type: "button", class: "older", id: "older" }, "Older builds");
  let plotObjs = [];
  let builds = [];
  let nextBefore = null;

  const drawInfo = (b) => {
    replace(
      head,
      h("h1", null, b.name, " ", h("span", { class: ["badge", `state-${b.state}`], id: "builder-state" }, b.state)),
      h(
        "div",
        { class: "cards" },
        section(
          "Builder",
          kv([
        ["last complete build", b.last_complete ? [badge(b.last_complete.result), " ", buildLink(b.last_complete), " ", ago(b.last_complete.finished_ms), failingSince(b)] : null],
        ["builds", String(b.builds_total ?? 0)],
        ["pending / running", `${b.pending ?? 0} / ${b.running ?? 0}`],
        ["priority", String(b.priority ?? 0)],
        ["slave tags needed", (b.tags || []).length ? (b.tags || []).join(", ") : null],
        ["steps", (b.steps || []).length ? (b.steps || []).join(" → ") : null],
        b.active === false ? ["note", "this builder is no longer in the configuration"] : null,
          ]),
        ),
        section(
          "Force a build",
          forceForm(name, ctx.flash),
          h("p", { class: "muted small" }, "Queues a build now; needs a token (log in at the top right)."),
        ),
      ),
    );
    replace(
      running,
      (b.current_builds || []).length
        ? table(
            ["build", "slave", "running for", ""],
            b.current_builds.map((c) =>
              h(
                "tr",
                { dataset: { build: c.id } },
                h("td", null, buildLink(c)),
                h("td", null, slaveLink(c.slave), c.slave_connected === false ? h("span", { class: "muted" }, " (disconnected)") : ""),
                h("td", null, elapsed(c.started_ms)),
                h("td", null, keep(`cancel build ${c.id}`, () => cancelBuildButton(c.id, ctx.flash))),
              ),
            ),
            { class: "grid", id: "running-builds" },
          )
        : h("p", { class: "muted" }, "Nothing running."),
    );
    replace(
      pending,
      (b.pending_requests || []).length
        ? table(
            ["position", "request", "reason", "owner", "waiting since", ""],
            b.pending_requests.map((r) =>
              h(
                "tr",
                { dataset: { request: r.id } },
                h("td", { class: "num" }, String(r.position ?? "")),
                h("td", null, String(r.id), r.retries ? h("span", { class: "muted" }, ` (retry ${r.retries})`) : ""),
                h("td", null, r.reason || ""),
                h("td", null, r.owner || ""),
                h("td", null, ago(r.submitted_ms)),
                h("td", null, keep(`cancel request ${r.id}`, () => cancelRequestButton(r.id, ctx.flash))),
              ),
            ),
            { class: "grid", id: "pending-requests" },
          )
        : h("p", { class: "muted" }, "No request is waiting."),
    );
    replace(
      slavesBox,
      (b.slaves || []).length
        ? h(
            "ul",
            { class: "slave-list", id: "allowed-slaves" },
            b.slaves.map((s) => h("li", null, slaveLink(s.name), " ", h("span", { class: ["badge", s.connected ? "state-idle" : "state-offline"] }, s.connected ? "connected" : "offline"))),
          )
        : h("p", { class: "muted" }, "No slave may run this builder (check its slaves and tags)."),
    );
  };

  const drawBuilds = () => {
    replace(
      buildsBox,
      builds.length
        ? table(
            ["build", "result", "slave", "reason", "started", "duration"],
            builds.map((b) =>
              h(
                "tr",
                { dataset: { build: b.id } },
                h("td", null, buildLink(b)),
                h("td", null, badge(b.result, b.state)),
                h("td", null, slaveLink(b.slave)),
                h("td", { class: "reason" }, b.reason || ""),
                h("td", { title: fmtTime(b.started_ms) }, ago(b.started_ms)),
                h("td", null, b.duration_ms !== null && b.duration_ms !== undefined ? fmtDuration(b.duration_ms) : b.started_ms ? elapsed(b.started_ms) : ""),
              ),
            ),
            { class: "grid", id: "recent-builds" },
          )
        : h("p", { class: "muted" }, "No builds yet."),
    );
    older.disabled = nextBefore === null || nextBefore === undefined;
    older.textContent = older.disabled ? "No older builds" : "Older builds";
  };

  // The series: from the stats endpoint when the master has it, else the
  // durations of the last builds.
  const loadSeries = async () => {
    const eps = await endpoints();
    if (eps.has("GET /api/v1/builders/{name}/stats")) {
      return get(`/builders/${enc}/stats`, { limit: PLOT_BUILDS });
    }
    const page = await get(`/builders/${enc}/builds`, { limit: PLOT_BUILDS });
    const bs = (page.builds || []).filter((b) => b.state === "finished").reverse();
    return { builds: bs, stats: {} };
  };

  const drawPlots = async () => {
    let series;
    try {
      series = await loadSeries();
    } catch (e) {
      replace(plots, h("p", { class: "error" }, `Could not load the series: ${e.message}`));
      return;
    }
    if (!ctx.alive()) return;
    for (const p of plotObjs) p.destroy();
    plotObjs = [];
    const bs = (series.builds || []).filter((b) => b.duration_ms !== null && b.duration_ms !== undefined);
    const boxes = [];
    const specs = [];
    if (bs.length) {
      specs.push({
        title: "build duration",
        xs: bs.map((b) => b.number),
        ys: bs.map((b) => b.duration_ms / 1000),
        results: bs.map((b) => b.result),
        ids: bs.map((b) => b.id),
        yLabel: "seconds",
        fmt: (v) => fmtDuration(v * 1000),
        id: "duration",
      });
    }
    for (const [stat, points] of Object.entries(series.stats || {})) {
      if (!points.length) continue;
      // One point per build: a stat reported by several steps shows the
      // last one.
      const byNum = new Map();
      const idOf = new Map();
      for (const p of points) {
        byNum.set(p.number, p.value);
        idOf.set(p.number, p.build_id);
      }
      const xs = [...byNum.keys()].sort((a, b) => a - b);
      specs.push({ title: stat, xs, ys: xs.map((x) => byNum.get(x)), ids: xs.map((x) => idOf.get(x)), yLabel: stat, id: `stat-${stat}` });
    }
    if (!specs.length) {
      replace(plots, h("p", { class: "muted" }, "No finished build to plot yet."));
      return;
    }
    replace(plots);
    for (const s of specs) {
      const box = h("div", { class: "plot", dataset: { plot: s.id } });
      plots.appendChild(box);
      boxes.push([box, s]);
    }
    try {
      for (const [box, s] of boxes) plotObjs.push(await drawPlot(box, s));
    } catch (e) {
      replace(plots, h("p", { class: "error" }, `Plots need web/vendor/uPlot.esm.js (run npm ci --prefix web): ${e.message}`));
    }
    if (ctx.alive()) plots.dataset.drawn = String(plotObjs.length);
  };
  ctx.onCleanup(() => plotObjs.forEach((p) => p.destroy()));

  const loadBuilds = async (before) => {
    const page = await get(`/builders/${enc}/builds`, { limit: 25, before });
    if (!ctx.alive()) return;
    builds = before ? builds.concat(page.builds || []) : page.builds || [];
    nextBefore = page.next_before;
    drawBuilds();
  };
  older.addEventListener("click", () => loadBuilds(nextBefore).catch((e) => ctx.flash(`Could not load older builds: ${e.message}`, "error")));

  const refresh = async (withPlots) => {
    try {
      const b = await get(`/builders/${enc}`);
      if (!ctx.alive()) return;
      drawInfo(b);
      // Keep the pages of older builds the user opened: refresh the newest.
      const page = await get(`/builders/${enc}/builds`, { limit: 25 });
      if (!ctx.alive()) return;
      const ids = new Set(page.builds.map((x) => x.id));
      builds = page.builds.concat(builds.filter((x) => !ids.has(x.id) && x.number < page.builds[page.builds.length - 1]?.number));
      if (nextBefore === undefined) nextBefore = page.next_before;
      drawBuilds();
      if (withPlots) await drawPlots();
    } catch (e) {
      // An unreachable master is the banner's to say.
      if (ctx.alive() && e.status !== 0) ctx.flash(`Could not refresh ${name}: ${e.message}`, "error");
    }
  };
  let plotsDue = false;
  const soon = debounce(() => {
    const p = plotsDue;
    plotsDue = false;
    refresh(p);
  }, 250);
  ctx.onCleanup(soon.cancel);
  ctx.subscribe("builds", (ev) => {
    if (ev.type === "reconnected" || (ev.build && ev.build.builder === name) || ev.builder === name) {
      if (ev.type === "build" && ev.event === "finished") plotsDue = true;
      soon();
    }
  });
  ctx.subscribe("requests", (ev) => {
    if (ev.type === "reconnected" || (ev.request && ev.request.builder === name)) soon();
  });
  ctx.subscribe("slaves", () => soon());
  ctx.every(1000, () => tickTimes(root));

  const info = await get(`/builders/${enc}`);
  if (!ctx.alive()) return;
  drawInfo(info);
  replace(
    root,
    head,
    section("Running", running),
    section("Pending requests", pending),
    section("Allowed slaves", slavesBox),
    section("Trends", plots),
    section("Recent builds", buildsBox, h("div", { class: "paging" }, older)),
  );
  await loadBuilds(null);
  await drawPlots();
  ctx.ready();
}
