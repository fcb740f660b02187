// jobs.js - the try-job queue and the recent try jobs. The queue is every
// request waiting (with its position in its builder's queue) or running
// (GET /api/v1/requests); below it the try jobs, newest first, paged (GET
// /api/v1/jobs). Refetched after live request and build events.

import { get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { ago, badge, buildLink, builderLink, buttonKeeper, cancelRequestButton, elapsed, jobLink, loading, section, tickTimes } from "../lib/ui.js";

export function jobBuilders(j) {
  return (j.builders || []).map((b) =>
    h(
      "span",
      { class: "jobcell", title: `${b.name}: ${b.result || b.state}` },
      b.build ? buildLink(b.build, b.name) : b.name,
      " ",
      badge(b.result, b.build ? b.build.state : b.state),
    ),
  );
}

export async function render(ctx) {
  const { root } = ctx;
  ctx.title("Try jobs");
  loading(root, "the try jobs");
  const keep = buttonKeeper();

  const queue = h("div");
  const jobsBox = h("div");
  const older = h("button", { type: "button", class: "older", id: "older" }, "Older jobs");
  let jobs = [];
  let nextBefore = null;

  const drawQueue = (reqs) => {
    const pending = reqs.filter((r) => r.state === "pending");
    const running = reqs.filter((r) => r.state === "running");
    const row = (r) =>
      h(
        "tr",
        { dataset: { request: r.id, state: r.state } },
        h("td", null, builderLink(r.builder)),
        h("td", null, r.state === "pending" ? h("span", { class: "position" }, `#${r.position ?? "?"}`) : badge(null, "running")),
        h("td", { class: "num" }, String(r.id)),
        h("td", null, r.job_id ? jobLink(r.job_id) : ""),
        h("td", null, r.owner || ""),
        h("td", { class: "reason" }, r.reason || ""),
        h("td", null, r.state === "pending" ? ago(r.submitted_ms) : r.started_ms ? elapsed(r.started_ms) : ""),
        h("td", null, r.build_id ? buildLink({ id: r.build_id }, `build ${r.build_id}`) : ""),
        h("td", null, keep(`cancel request ${r.id}`, () => cancelRequestButton(r.id, ctx.flash))),
      );
    replace(
      queue,
      h("p", { class: "muted" }, `${pending.length} waiting, ${running.length} running.`),
      reqs.length
        ? table(["builder", "position", "request", "job", "owner", "reason", "waiting / running", "build", ""], [...pending, ...running].map(row), {
            class: "grid",
            id: "queue",
          })
        : h("p", { class: "muted" }, "The queue is empty."),
    );
  };

  const drawJobs = () => {
    replace(
      jobsBox,
      jobs.length
        ? table(
            ["job", "author", "description", "state", "builders", "submitted"],
            jobs.map((j) =>
              h(
                "tr",
                { dataset: { job: j.id } },
                h("td", null, jobLink(j.id)),
                h("td", null, j.author || ""),
                h("td", { class: "reason" }, j.description || ""),
                h("td", null, badge(j.result, j.state)),
                h("td", null, jobBuilders(j)),
                h("td", null, ago(j.submitted_ms)),
              ),
            ),
            { class: "grid", id: "jobs" },
          )
        : h("p", { class: "muted" }, "No try job yet. Committers send them with tf-try."),
    );
    older.disabled = nextBefore === null || nextBefore === undefined;
    older.textContent = older.disabled ? "No older jobs" : "Older jobs";
  };

  const loadJobs = async (before) => {
    const page = await get("/jobs", { limit: 25, before });
    if (!ctx.alive()) return;
    jobs = before ? jobs.concat(page.jobs || []) : page.jobs || [];
    if (before || nextBefore === null) nextBefore = page.next_before;
    drawJobs();
  };
  older.addEventListener("click", () => loadJobs(nextBefore).catch((e) => ctx.flash(`Could not load older jobs: ${e.message}`, "error")));

  const soon = debounce(async () => {
    try {
      const [q, page] = await Promise.all([get("/requests"), get("/jobs", { limit: 25 })]);
      if (!ctx.alive()) return;
      drawQueue(q.requests || []);
      const ids = new Set(page.jobs.map((j) => j.id));
      const oldest = page.jobs.length ? page.jobs[page.jobs.length - 1].id : Infinity;
      jobs = page.jobs.concat(jobs.filter((j) => !ids.has(j.id) && j.id < oldest));
      drawJobs();
    } catch {
      /* keep what is shown */
    }
  }, 300);
  ctx.onCleanup(soon.cancel);
  ctx.subscribe("requests", soon);
  ctx.subscribe("builds", (ev) => {
    if (ev.type !== "step") soon();
  });
  ctx.every(1000, () => tickTimes(root));

  const q = await get("/requests");
  if (!ctx.alive()) return;
  drawQueue(q.requests || []);
  await loadJobs(null);
  replace(root, h("h1", null, "Try jobs"), section("Queue", queue), section("Recent try jobs", jobsBox, h("div", { class: "paging" }, older)));
  ctx.ready();
}
