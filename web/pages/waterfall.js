// waterfall.js - builders as columns, time flowing down: each build is a
// box listing its steps, coloured by result; running builds and steps are
// animated. Data: GET /api/v1/waterfall (newest first, paged by `before`),
// kept current by the "builds" topic of the live feed without reloading.
//
// Layout: builds are taken newest first and packed into rows; a build
// starts a new row when its builder's column in the current row is taken.
// So everything in a row is newer than everything below it, and the rows
// stay dense. Boxes are kept by build id and updated in place, so a
// build's box is the same element from "created" to "finished".
//
// Columns share the page's width (table-layout: fixed), so 8 to 12
// builders fit a 1440 px screen; with more, or on a phone, the table
// scrolls sideways inside its own box and the page does not. The header
// row gives each builder's state and pending requests (GET
// /api/v1/builders, refetched after live events). A box names the authors
// of its build where the data has them: the build's own `author` or
// `owner`, else its try job's author or its changes' authors as the
// console (GET /api/v1/console) lists them. A box created by a live event
// shows the event's reason and owner at once and fetches its build (for
// the steps not started yet) once it has started: asked at "created", the
// master's store may not have the build yet (a 404).
//
// Hash parameters: limit (builds per page, default 50), builder
// (repeatable: only these columns), view=grid (the dense grid: a small
// square per build, no steps, for many builders at once).

import { get } from "../lib/api.js";
import { debounce, h, replace } from "../lib/dom.js";
import { fmtDuration, fmtShortTime, fmtTime, resultClass, resultText, serverNow } from "../lib/format.js";
import { builderLink, loading, slaveLink, tickTimes } from "../lib/ui.js";

// A builder's state in the header row.
function stateLine(b) {
  if (!b) return null;
  const label = { building: "building", pending: "waiting", idle: "idle", offline: "offline", removed: "removed" }[b.state] || b.state;
  return h(
    "div",
    { class: "bstate", dataset: { state: b.state || "", pending: b.pending ?? 0 } },
    h("span", { class: ["badge", `state-${b.state}`] }, label),
    b.pending ? h("span", { class: "pending-count" }, ` ${b.pending} pending`) : null,
  );
}

export async function render(ctx) {
  const { root, query } = ctx;
  ctx.title("Waterfall");
  loading(root, "the waterfall");
  const limit = Math.max(1, Math.min(500, Number(query.get("limit")) || 50));
  const only = query.getAll("builder");
  const grid = query.get("view") === "grid";
  const builderInfo = new Map(); // name -> GET /api/v1/builders entry
  const authorsOf = new Map(); // build id -> authors (from the console)

  const builds = new Map(); // id -> build (with steps)
  const boxes = new Map(); // id -> element
  let columns = [];
  let nextBefore = null;
  let nextBeforeId = null;
  let pages = 0;

  const tbody = h("tbody");
  const thead = h("thead");
  const table = h("table", { class: ["waterfall", grid ? "wgrid" : null], id: "waterfall" }, thead, tbody);
  const older = h("button", { type: "button", id: "older", class: "older" }, "Older builds");
  const status = h("span", { class: "muted paging-status" });

  const stepsList = (b) =>
    h(
      "ol",
      { class: "wsteps" },
      (b.steps || []).map((s) =>
        h(
          "li",
          {
            class: ["wstep", resultClass(s.result, s.state)],
            dataset: { step: s.index },
            title: `${s.name}: ${resultText(s.result, s.state)}${s.text ? ` (${s.text})` : ""}${s.info ? ` ${s.info}` : ""}${
              s.started_ms && s.finished_ms ? `, ${fmtDuration(s.finished_ms - s.started_ms)}` : ""
            }`,
          },
          h("a", { href: `#/builds/${b.id}/steps/${s.index}` }, s.name),
          s.info ? h("span", { class: "wstep-text" }, String(s.info)) : null,
          !s.info && s.text && s.result && s.result !== "SUCCESS" ? h("span", { class: "wstep-text" }, s.text) : null,
        ),
      ),
    );

  const authorText = (b) => b.author || b.owner || (Array.isArray(b.authors) ? b.authors.join(", ") : "") || authorsOf.get(b.id) || "";

  const fillBox = (box, b) => {
    box.className = `wbox ${resultClass(b.result, b.state)}`;
    box.dataset.state = b.state || "";
    box.dataset.result = b.result || "";
    box.dataset.created = b.created_ms || "";
    const dur =
      b.finished_ms && b.started_ms
        ? fmtDuration(b.finished_ms - b.started_ms)
        : b.started_ms
          ? h("span", { dataset: { since: b.started_ms } }, fmtDuration(serverNow() - b.started_ms))
          : "";
    const who = authorText(b);
    const title = `${b.builder} #${b.number}: ${resultText(b.result, b.state)}, created ${fmtTime(b.created_ms)}${who ? `, by ${who}` : ""}${b.reason ? ` (${b.reason})` : ""}`;
    if (grid) {
      replace(box, h("a", { class: "wbox-head", href: `#/builds/${b.id}`, title, "aria-label": title }, `${b.number}`));
      return;
    }
    replace(
      box,
      h(
        "a",
        { class: "wbox-head", href: `#/builds/${b.id}`, title },
        h("span", { class: "wbox-num" }, `#${b.number}`),
        " ",
        h("span", { class: "wbox-result" }, resultText(b.result, b.state)),
      ),
      h("div", { class: "wbox-meta" }, slaveLink(b.slave), b.slave && dur ? " · " : "", dur),
      who ? h("div", { class: "wbox-author", title: who }, who) : null,
      b.reason ? h("div", { class: "wbox-reason", title: b.reason }, b.reason) : null,
      stepsList(b),
    );
  };

  const boxOf = (b) => {
    let box = boxes.get(b.id);
    if (!box) {
      box = h("div", { class: "wbox", dataset: { build: b.id, builder: b.builder } });
      boxes.set(b.id, box);
    }
    fillBox(box, b);
    return box;
  };

  const layout = () => {
    const all = [...builds.values()].sort((a, b) => b.created_ms - a.created_ms || b.id - a.id);
    const cols = [...columns];
    for (const b of all) if (!cols.includes(b.builder)) cols.push(b.builder);
    // A row of names, and under it a row of states and pending counts.
    replace(
      thead,
      h(
        "tr",
        null,
        h("th", { class: "wtime", scope: "col" }, "time"),
        cols.map((c) => h("th", { dataset: { builder: c }, scope: "col", class: "wbuilder" }, builderLink(c))),
      ),
      h(
        "tr",
        { class: "wstates" },
        h("th", { class: "wtime", scope: "row" }, h("span", { class: "visually-hidden" }, "state")),
        cols.map((c) => h("th", { dataset: { stateOf: c }, class: "wstate" }, stateLine(builderInfo.get(c)))),
      ),
    );
    // Equal columns in the page's width, never narrower than the CSS
    // minimum: past that the table scrolls inside its box.
    table.style.setProperty("--wcols", String(cols.length));
    const rows = [];
    let row = null;
    for (const b of all) {
      if (!row || row.cells.has(b.builder)) {
        row = { time: b.created_ms, cells: new Map() };
        rows.push(row);
      }
      row.cells.set(b.builder, b);
    }
    replace(
      tbody,
      rows.map((r) =>
        h(
          "tr",
          null,
          h("td", { class: "wtime", title: fmtTime(r.time) }, fmtShortTime(r.time)),
          cols.map((c) => h("td", { class: "wcell" }, r.cells.has(c) ? boxOf(r.cells.get(c)) : null)),
        ),
      ),
    );
    if (!all.length) {
      replace(tbody, h("tr", null, h("td", { colspan: cols.length + 1, class: "muted" }, "No builds yet.")));
    }
    root.dataset.columns = String(cols.length);
    root.dataset.builds = String(all.length);
    root.dataset.pages = String(pages);
  };

  // Returns how many builds were new.
  const addPage = (page) => {
    if (page.builders) columns = only.length ? page.builders.filter((n) => only.includes(n)) : page.builders;
    let added = 0;
    for (const b of page.builds || []) {
      if (!builds.has(b.id)) added++;
      builds.set(b.id, b);
    }
    nextBefore = page.next_before;
    nextBeforeId = page.next_before_id;
    pages++;
    older.disabled = nextBefore === null || nextBefore === undefined;
    older.textContent = older.disabled ? "No older builds" : "Older builds";
    layout();
    return added;
  };

  // The cursor is the last build shown: its creation time and id, so
  // builds created in the same millisecond are neither lost nor repeated.
  const fetchOlder = async () => {
    const page = await get("/waterfall", { before: nextBefore, before_id: nextBeforeId, limit, builder: only });
    if (ctx.alive()) addPage(page);
  };

  older.addEventListener("click", async () => {
    if (nextBefore === null || nextBefore === undefined) return;
    // Disabled while loading too; aria-busy tells "loading" from "no more".
    older.disabled = true;
    older.setAttribute("aria-busy", "true");
    status.textContent = "loading…";
    try {
      await fetchOlder();
      status.textContent = "";
    } catch (e) {
      older.disabled = false;
      status.textContent = "";
      ctx.flash(`Could not load older builds: ${e.message}`, "error");
    } finally {
      older.removeAttribute("aria-busy");
    }
  });

  // --- live ---

  // The whole build (its steps not started yet, its reason): the live
  // event can come before the master's store has the build, so a 404 is
  // tried again a little later, a few times.
  const fetchOne = async (id, tries = 3) => {
    try {
      const b = await get(`/builds/${id}`);
      if (ctx.alive() && (!only.length || only.includes(b.builder))) {
        builds.set(b.id, { ...(builds.get(b.id) || {}), ...b });
        layout();
      }
    } catch (e) {
      if (e.status === 404 && tries > 1 && ctx.alive()) {
        const t = setTimeout(() => fetchOne(id, tries - 1), 500);
        ctx.onCleanup(() => clearTimeout(t));
      }
    }
  };

  const onEvent = (ev) => {
    if (ev.type === "reconnected" || ev.type === "overflow") {
      refreshNewest();
      return;
    }
    if (ev.type === "build") {
      const e = ev.build;
      if (only.length && !only.includes(e.builder)) return;
      const known = builds.get(e.id);
      if (known) {
        // Its steps come with the build: fetched once it has started
        // (well after the master stored it).
        const fetchSteps = ev.event === "started" && !(known.steps || []).length;
        for (const [k, v] of Object.entries(e)) if (v !== null || !(k in known)) known[k] = v;
        fillBox(boxOf(known), known);
        if (fetchSteps) fetchOne(e.id);
      } else if (ev.event === "created") {
        // The event says what the box shows (reason, owner, times); a
        // master older than that is asked for the build.
        builds.set(e.id, { ...e, steps: [] });
        layout();
        if (!("reason" in e)) fetchOne(e.id);
      } else {
        fetchOne(e.id);
      }
    } else if (ev.type === "step") {
      if (only.length && !only.includes(ev.builder)) return;
      const b = builds.get(ev.build_id);
      if (!b) {
        fetchOne(ev.build_id);
        return;
      }
      const steps = b.steps || (b.steps = []);
      const i = steps.findIndex((s) => s.index === ev.step.index);
      if (i >= 0) steps[i] = { ...steps[i], ...ev.step };
      else {
        steps.push(ev.step);
        steps.sort((x, y) => x.index - y.index);
      }
      if (b.state === "starting") b.state = "running";
      fillBox(boxOf(b), b);
    }
  };

  const refreshNewest = async () => {
    try {
      const page = await get("/waterfall", { limit, builder: only });
      if (!ctx.alive()) return;
      for (const b of page.builds || []) builds.set(b.id, b);
      layout();
    } catch {
      /* keep what is shown */
    }
  };

  // The header row's states and the authors of the newest builds.
  const fetchBuilders = async () => {
    const list = await get("/builders");
    for (const b of Array.isArray(list) ? list : list.builders || []) builderInfo.set(b.name, b);
  };
  const fetchAuthors = async () => {
    const page = await get("/console", { limit: 100 });
    for (const r of page.rows || []) {
      if (!r.author) continue;
      for (const c of Object.values(r.builds || {})) {
        if (!c.build_id) continue;
        const had = authorsOf.get(c.build_id);
        authorsOf.set(c.build_id, had && !had.split(", ").includes(r.author) ? `${had}, ${r.author}` : had || r.author);
      }
    }
  };
  const refreshSide = debounce(async () => {
    try {
      await Promise.all([fetchBuilders(), fetchAuthors()]);
      if (ctx.alive()) layout();
    } catch {
      /* keep what is shown */
    }
  }, 400);
  ctx.onCleanup(refreshSide.cancel);

  ctx.subscribe("builds", (ev) => {
    onEvent(ev);
    if (ev.type !== "step") refreshSide();
  });
  ctx.subscribe("requests", () => refreshSide());
  ctx.subscribe("slaves", () => refreshSide());
  ctx.every(1000, () => tickTimes(root));

  const [first] = await Promise.all([get("/waterfall", { limit, builder: only }), fetchBuilders().catch(() => null), fetchAuthors().catch(() => null)]);
  if (!ctx.alive()) return;
  const other = new URLSearchParams(query);
  if (grid) other.delete("view");
  else other.set("view", "grid");
  const otherHref = `#/waterfall${other.toString() ? `?${other}` : ""}`;
  replace(
    root,
    h(
      "div",
      { class: "page-title" },
      h("h1", null, grid ? "Waterfall grid" : "Waterfall"),
      h("a", { href: otherHref, class: "view-switch", id: "view-switch" }, grid ? "Show boxes with steps" : "Dense grid"),
    ),
    h(
      "p",
      { class: "muted intro" },
      grid
        ? "Newest builds on top; each square is a build, coloured by its result. Hover for details; click to open."
        : "Newest builds on top; each box is a build with its steps. Running builds move; boxes change as builds progress, without reloading.",
    ),
    h("div", { class: "waterfall-scroll" }, table),
    h("div", { class: "paging" }, older, status),
  );
  addPage(first);
  ctx.ready();
}
