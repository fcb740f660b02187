// summary.js - the home page: the project-wide verdict, then every builder
// with the result of its last complete build, its state now (idle,
// building for how long, offline, N pending) and when. Data: GET
// /api/v1/summary (summary rows, cheap); refetched after live events.
//
// On a phone (style.css, max-width 700px) each builder's row is stacked:
// name and state, then its last build with the "red since" line across
// the whole width, then when it finished and its slaves (the cells'
// data-label says what they are), so nothing scrolls sideways.

import { get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { learnServerTime, verdictText } from "../lib/format.js";
import { ago, badge, buildLink, builderLink, elapsed, failingSince, loading, slaveLink, tickTimes } from "../lib/ui.js";

function stateCell(b) {
  const parts = [];
  if (b.state === "building" || (b.current && b.current.length)) {
    for (const c of b.current || []) {
      parts.push(
        h("div", { class: "state-line" }, badge(null, "running", "building"), " ", buildLink(c), " on ", slaveLink(c.slave), " for ", elapsed(c.started_ms)),
      );
    }
    if (!parts.length) parts.push(badge(null, "running", "building"));
  } else if (b.state === "offline") {
    parts.push(h("span", { class: "badge state-offline" }, "offline"));
  } else if (b.state === "pending") {
    parts.push(h("span", { class: "badge state-pending" }, "waiting for a slave"));
  } else if (b.state === "removed") {
    parts.push(h("span", { class: "badge state-offline" }, "removed"));
  } else {
    parts.push(h("span", { class: "badge state-idle" }, "idle"));
  }
  if (b.pending) parts.push(h("div", { class: "state-line pending-count" }, `${b.pending} pending`));
  return parts;
}

// Explicit roles: on a phone the table is laid out as blocks (display:
// grid on its rows), which would otherwise cost it its table semantics
// for screen readers.
function tableWithRoles(box) {
  const roles = { TABLE: "table", THEAD: "rowgroup", TBODY: "rowgroup", TR: "row", TH: "columnheader", TD: "cell" };
  for (const el of box.querySelectorAll("table, thead, tbody, tr, th, td")) el.setAttribute("role", roles[el.tagName]);
  return box;
}

export async function render(ctx) {
  const { root } = ctx;
  ctx.title("Summary");
  loading(root, "the summary");

  const draw = (s) => {
    learnServerTime(s.time_ms);
    const rows = (s.builders || []).map((b) =>
      h(
        "tr",
        { dataset: { builder: b.name, state: b.state } },
        h("td", { class: "name" }, builderLink(b.name)),
        h("td", { class: "last-result" }, b.last ? [badge(b.last.result), " ", buildLink(b.last), failingSince(b)] : h("span", { class: "muted" }, "no build yet")),
        h("td", { class: "when", dataset: { label: "finished" } }, b.last ? ago(b.last.finished_ms) : ""),
        h("td", { class: "state" }, stateCell(b)),
        h("td", { class: "num", dataset: { label: "slaves up" } }, b.connected_slaves !== undefined ? String(b.connected_slaves) : ""),
      ),
    );
    replace(
      root,
      h(
        "div",
        { class: ["verdict", `verdict-${s.verdict || "unknown"}`], id: "verdict", dataset: { verdict: s.verdict || "unknown" } },
        h(
          "span",
          { class: "verdict-text" },
          verdictText(s.verdict),
          (s.failing || []).length
            ? h("span", { class: "verdict-builders", id: "verdict-builders" }, ": ", (s.failing || []).map((f, i) => [i ? ", " : "", builderLink(f.name)]))
            : null,
        ),
        h("span", { class: "verdict-slaves" }, `${s.slaves ? s.slaves.connected : 0} of ${s.slaves ? s.slaves.total : 0} slaves connected`),
      ),
      h("h1", null, s.name || ctx.masterName()),
      rows.length ? tableWithRoles(table(["builder", "last complete build", "finished", "now", "slaves up"], rows, { class: "grid summary", id: "summary-table" })) : h("p", { class: "muted" }, "No builders are configured."),
    );
    ctx.ready();
  };

  const refetch = async () => {
    try {
      const s = await get("/summary");
      if (ctx.alive()) draw(s);
    } catch (e) {
      // An unreachable master is the banner's to say.
      if (ctx.alive() && e.status !== 0) ctx.flash(`Could not refresh the summary: ${e.message}`, "error");
    }
  };
  const soon = debounce(refetch, 250);
  ctx.onCleanup(soon.cancel);
  for (const t of ["builds", "requests", "slaves"]) {
    ctx.subscribe(t, soon);
  }
  ctx.every(1000, () => tickTimes(root));
  draw(await get("/summary"));
}
