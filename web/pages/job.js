// job.js - one try job: who sent it and what (description, review URL,
// base revision, the patch), its state, and one row per builder with its
// request's position while it waits and its build once it runs, with the
// build's steps. Cancel for the author or an admin. Data: GET
// /api/v1/jobs/{id}; refetched after live events.

import { auth, apiUrl, get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { fmtBytes, fmtTime } from "../lib/format.js";
import { badge, buildLink, builderLink, buttonKeeper, cancelJobButton, kv, loading, section, slaveLink } from "../lib/ui.js";

function stepChips(build) {
  return h(
    "span",
    { class: "chips" },
    (build.steps || []).map((s) =>
      h("a", { href: `#/builds/${build.id}/steps/${s.index}`, class: ["chip", `r-${(s.result || (s.state === "running" ? "running" : "pending")).toLowerCase()}`], title: `${s.name}: ${s.result || s.state}${s.text ? ` (${s.text})` : ""}` }, s.name),
    ),
  );
}

async function downloadPatch(patch, flash) {
  if (!auth.token()) {
    flash("Downloading a patch needs a token: log in first.", "error");
    return;
  }
  const resp = await fetch(apiUrl(`/patches/${patch.sha256}`), { headers: { Authorization: `Bearer ${auth.token()}` } });
  if (!resp.ok) {
    flash(`Patch download refused (${resp.status}).`, "error");
    return;
  }
  const url = URL.createObjectURL(await resp.blob());
  const a = h("a", { href: url, download: `job-${patch.sha256.slice(0, 12)}.patch` });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

export async function render(ctx) {
  const { root } = ctx;
  const id = Number(ctx.params[0]);
  ctx.title(`Try job ${id}`);
  loading(root, `try job ${id}`);
  const keep = buttonKeeper();

  const draw = (j) => {
    const done = j.state === "finished" || j.state === "cancelled";
    replace(
      root,
      h("h1", null, `Try job ${j.id} `, h("span", { id: "job-result" }, badge(j.result, j.state))),
      h("div", { class: "actions" }, !done ? keep("cancel", () => cancelJobButton(j.id, ctx.flash)) : null),
      section(
        "Job",
        kv(
        [
          ["author", `${j.author || ""}${j.email ? ` <${j.email}>` : ""}`],
          ["description", j.description],
          ["review", j.review_url ? h("a", { href: j.review_url, rel: "noopener noreferrer", class: "review-url" }, j.review_url) : null],
          ["patchset", j.patchset],
          ["base revision", j.base_revision ? h("code", null, j.base_revision) : "head of each builder's branch"],
          [
            "patch",
            j.patch
              ? j.patch.size
                ? h("button", { type: "button", class: "patch-download", onclick: () => downloadPatch(j.patch, ctx.flash) }, `download patch (${fmtBytes(j.patch.size)})`)
                : h("span", { class: "muted" }, "empty (the base revision as it is)")
              : null,
          ],
          ["state", j.state],
          ["submitted", fmtTime(j.submitted_ms)],
          ["finished", fmtTime(j.finished_ms)],
        ],
          { class: "kv", id: "job-info" },
        ),
      ),
      section(
        "Builders",
        table(
          ["builder", "tests", "request", "state", "build", "slave", "steps"],
          (j.builders || []).map((b) =>
            h(
              "tr",
              { dataset: { builder: b.name, state: b.state } },
              h("td", null, builderLink(b.name)),
              h("td", null, (b.tests || []).join(" ")),
              h("td", null, String(b.request_id ?? ""), b.state === "pending" && b.position ? h("span", { class: "position" }, ` (#${b.position} in queue)`) : ""),
              h("td", null, badge(b.result, b.build ? b.build.state : b.state)),
              h("td", null, b.build ? buildLink(b.build) : h("span", { class: "muted" }, "not started")),
              h("td", null, b.build ? slaveLink(b.build.slave) : ""),
              h("td", null, b.build ? stepChips(b.build) : ""),
            ),
          ),
          { class: "grid", id: "job-builders" },
        ),
      ),
    );
    ctx.ready();
  };

  const soon = debounce(async () => {
    try {
      const j = await get(`/jobs/${id}`);
      if (ctx.alive()) draw(j);
    } catch {
      /* keep what is shown */
    }
  }, 250);
  ctx.onCleanup(soon.cancel);
  ctx.subscribe("builds", soon);
  ctx.subscribe("requests", soon);
  draw(await get(`/jobs/${id}`));
}
