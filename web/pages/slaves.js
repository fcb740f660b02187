// slaves.js - every slave the master has configured or seen: connected or
// offline, tags and platform, what it builds now, when it was last seen,
// builds done. Data: GET /api/v1/slaves; refetched after live events.

import { get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { ago, buildLink, elapsed, loading, slaveLink, tickTimes } from "../lib/ui.js";

export function slaveState(s) {
  if (s.connected) {
    if (s.draining) return h("span", { class: "badge state-pending" }, "draining");
    return h("span", { class: "badge state-idle" }, "connected");
  }
  return h("span", { class: "badge state-offline" }, "offline");
}

export function currentBuilds(list) {
  if (!list || !list.length) return h("span", { class: "muted" }, "idle");
  return list.map((c) => h("div", null, h("span", null, `${c.builder} `), buildLink(c), " for ", elapsed(c.started_ms)));
}

export async function render(ctx) {
  const { root } = ctx;
  ctx.title("Slaves");
  loading(root, "the slaves");

  const draw = (slaves) => {
    const up = slaves.filter((s) => s.connected).length;
    replace(
      root,
      h("h1", null, "Slaves"),
      h("p", { class: "muted" }, `${up} of ${slaves.length} connected.`),
      slaves.length
        ? table(
            ["slave", "state", "tags", "platform", "version", "building", "last seen", "builds done"],
            slaves.map((s) =>
              h(
                "tr",
                { dataset: { slave: s.name, connected: s.connected ? "1" : "0" } },
                h("td", null, slaveLink(s.name), s.configured === false ? h("span", { class: "muted" }, " (not configured)") : ""),
                h("td", null, slaveState(s)),
                h("td", null, (s.tags || []).map((t) => h("span", { class: "tag" }, t))),
                h("td", null, s.platform || ""),
                h("td", null, s.version || ""),
                h("td", null, currentBuilds(s.current_builds)),
                h("td", null, s.connected ? "now" : ago(s.last_seen_ms)),
                h("td", { class: "num" }, String(s.builds_done ?? 0)),
              ),
            ),
            { class: "grid", id: "slaves" },
          )
        : h("p", { class: "muted" }, "No slave is configured."),
    );
    ctx.ready();
  };
  const soon = debounce(async () => {
    try {
      const s = await get("/slaves");
      if (ctx.alive()) draw(s);
    } catch {
      /* keep what is shown */
    }
  }, 250);
  ctx.onCleanup(soon.cancel);
  ctx.subscribe("slaves", soon);
  ctx.subscribe("builds", (ev) => {
    if (ev.type !== "step") soon();
  });
  ctx.every(1000, () => tickTimes(root));
  draw(await get("/slaves"));
}
