// slave.js - one slave: its state and details, what it builds now, its
// connect/disconnect history (the last 50 events) and its recent builds.
// Data: GET /api/v1/slaves/{name}; refetched after live events.

import { get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { fmtTime } from "../lib/format.js";
import { ago, badge, buildLink, builderLink, kv, loading, section, tickTimes } from "../lib/ui.js";
import { currentBuilds, slaveState } from "./slaves.js";

export async function render(ctx) {
  const { root } = ctx;
  const name = ctx.params[0];
  ctx.title(name);
  loading(root, `slave ${name}`);

  const draw = (s) => {
    replace(
      root,
      h("h1", null, s.name, " ", slaveState(s)),
      section(
        "Slave",
        kv(
        [
          ["tags", (s.tags || []).map((t) => h("span", { class: "tag" }, t))],
          ["platform", s.platform],
          ["version", s.version],
          ["max builds", s.max_builds !== null && s.max_builds !== undefined ? String(s.max_builds) : null],
          ["building", currentBuilds(s.current_builds)],
          ["connected since", s.connected ? fmtTime(s.connected_ms) : null],
          ["last seen", s.connected ? "now" : ago(s.last_seen_ms)],
          ["disconnected", s.disconnected_ms ? fmtTime(s.disconnected_ms) : null],
          ["first seen", fmtTime(s.first_seen_ms)],
          ["builds done", String(s.builds_done ?? 0)],
          s.last_error ? ["last error", s.last_error] : null,
          s.configured === false ? ["note", "not in the current configuration"] : null,
        ],
          { class: "kv", id: "slave-info" },
        ),
      ),
      section(
        "Connections",
        (s.events || []).length
          ? table(
              ["when", "event", "detail"],
              s.events.map((e) =>
                h(
                  "tr",
                  { dataset: { event: e.event } },
                  h("td", { title: fmtTime(e.time_ms) }, fmtTime(e.time_ms)),
                  h("td", null, h("span", { class: ["badge", `ev-${e.event}`] }, e.event)),
                  h("td", null, e.detail || ""),
                ),
              ),
              { class: "grid", id: "slave-events" },
            )
          : h("p", { class: "muted" }, "No connection recorded."),
      ),
      section(
        "Recent builds",
        (s.recent_builds || []).length
          ? table(
              ["build", "builder", "result", "finished"],
              s.recent_builds.map((b) =>
                h("tr", null, h("td", null, buildLink(b)), h("td", null, builderLink(b.builder)), h("td", null, badge(b.result, b.finished_ms ? "finished" : "running")), h("td", null, ago(b.finished_ms))),
              ),
              { class: "grid", id: "slave-builds" },
            )
          : h("p", { class: "muted" }, "No builds yet."),
      ),
    );
    ctx.ready();
  };
  const soon = debounce(async () => {
    try {
      const s = await get(`/slaves/${encodeURIComponent(name)}`);
      if (ctx.alive()) draw(s);
    } catch {
      /* keep what is shown */
    }
  }, 250);
  ctx.onCleanup(soon.cancel);
  ctx.subscribe("slaves", (ev) => {
    if (ev.type === "reconnected" || (ev.slave && ev.slave.name === name)) soon();
  });
  ctx.subscribe("builds", (ev) => {
    if (ev.type === "build" && ev.build.slave === name) soon();
  });
  ctx.every(1000, () => tickTimes(root));
  draw(await get(`/slaves/${encodeURIComponent(name)}`));
}
