// change.js - one change (a commit a poller recorded): its revision,
// author, committer time, repository and branch, whole message, the files
// it touched, and every build whose blamelist holds it with its result.
// Data: GET /api/v1/changes/{id}; refetched after live build events, so
// the builds of the change appear and finish on the page by themselves.

import { get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { fmtTime } from "../lib/format.js";
import { ago, badge, buildLink, builderLink, kv, loading, section, tickTimes } from "../lib/ui.js";

export async function render(ctx) {
  const { root } = ctx;
  const id = Number(ctx.params[0]);
  ctx.title(`Change ${id}`);
  loading(root, `change ${id}`);

  const draw = (c) => {
    const message = c.message || "";
    const title = message.split("\n")[0] || `change ${c.id}`;
    ctx.title(`${title.slice(0, 60)} (change ${c.id})`);
    const files = c.files || [];
    const builds = c.builds || [];
    replace(
      root,
      h("h1", { class: "change-title" }, title),
      section(
        "Change",
        kv(
          [
            ["revision", h("code", { class: "revision", id: "change-revision" }, c.revision || "")],
            // The repository's own view of the commit (the master's commit_url).
            c.commit_url && /^https?:\/\//.test(c.commit_url) ? ["commit", h("a", { href: c.commit_url, id: "change-commit", rel: "noopener" }, "view the commit")] : null,
            ["author", `${c.author || ""}${c.email ? ` <${c.email}>` : ""}`],
            ["committed", c.committer_ms ? fmtTime(c.committer_ms) : null],
            ["recorded", c.created_ms ? [fmtTime(c.created_ms), " (", ago(c.created_ms), ")"] : null],
            ["repository", c.repository],
            ["branch", c.branch],
          ],
          { class: "kv", id: "change-info" },
        ),
        h("pre", { class: "change-message", id: "change-message" }, message),
      ),
      section(
        `Files (${files.length}${files.length >= 1000 ? "+" : ""})`,
        files.length ? h("ul", { class: "change-files", id: "change-files" }, files.map((f) => h("li", null, h("code", null, f)))) : h("p", { class: "muted" }, "No file (an empty commit)."),
      ),
      section(
        "Builds that included it",
        builds.length
          ? table(
              ["build", "builder", "result", "requested", "finished"],
              builds.map((b) =>
                h(
                  "tr",
                  { dataset: { build: b.id, result: b.result || "" } },
                  h("td", null, buildLink(b)),
                  h("td", null, builderLink(b.builder)),
                  h("td", null, badge(b.result, b.state)),
                  h("td", { title: fmtTime(b.created_ms) }, ago(b.created_ms)),
                  h("td", { title: fmtTime(b.finished_ms) }, b.finished_ms ? ago(b.finished_ms) : ""),
                ),
              ),
              { class: "grid", id: "change-builds" },
            )
          : h("p", { class: "muted", id: "change-no-builds" }, "No build has included it yet (its scheduler may still wait for the tree to be stable)."),
      ),
    );
    ctx.ready();
  };

  const soon = debounce(async () => {
    try {
      const c = await get(`/changes/${id}`);
      if (ctx.alive()) draw(c);
    } catch {
      /* keep what is shown */
    }
  }, 300);
  ctx.onCleanup(soon.cancel);
  ctx.subscribe("builds", (ev) => {
    if (ev.type !== "step") soon();
  });
  ctx.every(1000, () => tickTimes(root));
  draw(await get(`/changes/${id}`));
}
