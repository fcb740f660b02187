// console.js - rows are try jobs and changes (newest first), columns are
// builders; a cell is the build of that row on that builder, coloured by
// its result. Data: GET /api/v1/console, paged by `before`; refetched
// after live build events. A row's title links to its try job's page or
// its change's page (#/changes/ID); on a narrow screen the title column
// stays in place while the builders' columns scroll under it.

import { get } from "../lib/api.js";
import { debounce, h, replace } from "../lib/dom.js";
import { fmtShortTime, fmtTime, resultClass, resultText } from "../lib/format.js";
import { builderLink, changeLink, loading } from "../lib/ui.js";

export async function render(ctx) {
  const { root, query } = ctx;
  ctx.title("Console");
  loading(root, "the console");
  const limit = Math.max(1, Math.min(200, Number(query.get("limit")) || 50));

  let rows = [];
  let builders = [];
  let nextBefore = null;
  let nextCursor = null;
  const table = h("table", { class: "console", id: "console" });
  const older = h("button", { type: "button", id: "older", class: "older" }, "Older rows");

  const rowTitle = (r) => {
    if (r.kind === "job") return h("a", { href: `#/jobs/${r.id}`, class: "job-link" }, r.title || `try job ${r.id}`);
    return changeLink(r.id, r.title || `change ${r.id}`);
  };

  const draw = () => {
    const cols = [...builders];
    for (const r of rows) for (const b of Object.keys(r.builds || {})) if (!cols.includes(b)) cols.push(b);
    replace(
      table,
      h(
        "thead",
        null,
        h(
          "tr",
          null,
          h("th", { scope: "col", class: "ctitle" }, "try job or change"),
          h("th", { scope: "col" }, "author"),
          h("th", { scope: "col" }, "when"),
          cols.map((c) => h("th", { scope: "col", class: "ccol" }, builderLink(c))),
        ),
      ),
      h(
        "tbody",
        null,
        rows.length
          ? rows.map((r) =>
              h(
                "tr",
                { dataset: { kind: r.kind, id: r.id } },
                h(
                  "th",
                  { scope: "row", class: "ctitle" },
                  h("span", { class: ["kind", `kind-${r.kind}`] }, r.kind === "job" ? "try" : "change"),
                  " ",
                  rowTitle(r),
                  r.kind === "change" && r.revision ? h("code", { class: "crev" }, ` ${r.revision.slice(0, 8)}`) : null,
                ),
                h("td", { class: "cauthor" }, r.author || ""),
                h("td", { class: "cwhen", title: fmtTime(r.time_ms) }, fmtShortTime(r.time_ms)),
                cols.map((c) => {
                  const b = (r.builds || {})[c];
                  if (!b) return h("td", { class: "ccell empty" });
                  return h(
                    "td",
                    { class: ["ccell", resultClass(b.result, b.state)] },
                    b.build_id
                      ? h("a", { href: `#/builds/${b.build_id}`, title: `${c} #${b.number}: ${resultText(b.result, b.state)}` }, resultText(b.result, b.state))
                      : h("span", { title: `${c}: ${resultText(b.result, b.state)}` }, resultText(b.result, b.state)),
                  );
                }),
              ),
            )
          : h("tr", null, h("td", { colspan: 3 + cols.length, class: "muted" }, "No try jobs or changes yet.")),
      ),
    );
    older.disabled = nextBefore === null || nextBefore === undefined;
    older.textContent = older.disabled ? "No older rows" : "Older rows";
    root.dataset.rows = String(rows.length);
  };

  // The cursor is the last row shown (its time, and at that millisecond
  // the job and change ids already shown), so rows sharing a millisecond
  // are neither lost nor repeated.
  const load = async (cursor) => {
    const page = await get("/console", { limit, ...(cursor || {}) });
    if (!ctx.alive()) return;
    builders = page.builders || builders;
    rows = cursor ? rows.concat(page.rows || []) : page.rows || [];
    nextBefore = page.next_before;
    nextCursor = nextBefore === null || nextBefore === undefined ? null : { before: nextBefore, before_job: page.next_before_job, before_change: page.next_before_change };
    draw();
  };

  older.addEventListener("click", () => load(nextCursor).catch((e) => ctx.flash(`Could not load older rows: ${e.message}`, "error")));

  // Live: refetch the newest page after build events (the rows a page
  // already shows below it do not change order).
  const soon = debounce(async () => {
    try {
      const page = await get("/console", { limit });
      if (!ctx.alive()) return;
      const ids = new Set(page.rows.map((r) => `${r.kind}:${r.id}`));
      rows = page.rows.concat(rows.filter((r) => !ids.has(`${r.kind}:${r.id}`)));
      builders = page.builders || builders;
      draw();
    } catch {
      /* keep what is shown */
    }
  }, 300);
  ctx.onCleanup(soon.cancel);
  ctx.subscribe("builds", soon);
  ctx.subscribe("requests", soon);

  await load(null);
  replace(
    root,
    h("h1", null, "Console"),
    h("p", { class: "muted" }, "Each row is a try job or a change; each column a builder."),
    h("div", { class: "waterfall-scroll console-scroll" }, table),
    h("div", { class: "paging" }, older),
  );
  ctx.ready();
}
