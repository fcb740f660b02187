// build.js - one build: what it is (state, result, slave, reason, times),
// its source (revision, got_revision, the try job's patch, author and
// review URL), its steps with duration, result and info text, the log
// viewer (logview.js) on one step, and its properties. Cancel and rebuild
// for logged-in users.
//
// Route #/builds/ID shows the log of the running step and follows the
// build from step to step; #/builds/ID/steps/S stays on step S.
// Live: the "builds" topic updates the steps as they start and end; the
// viewer follows the running step's log on log:ID:S.

import { auth, apiUrl, get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { fmtBytes, fmtDuration, fmtTime } from "../lib/format.js";
import { LogViewer } from "../lib/logview.js";
import { badge, builderLink, cancelBuildButton, elapsed, jobLink, kv, loading, rebuildButton, section, slaveLink, tickTimes } from "../lib/ui.js";

// Control characters (an ESC in a command) as \xNN, so they show.
function visible(text) {
  return text.replace(/[\x00-\x08\x0b-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

// A step's stats ({name: value} or [{name, value}]) as "a=1 b=2".
function statsText(stats) {
  if (!stats) return "";
  const pairs = Array.isArray(stats) ? stats.map((x) => [x.name, x.value]) : Object.entries(stats);
  return pairs.map(([k, v]) => `${k}=${v}`).join("  ");
}

function pickStep(build) {
  const steps = build.steps || [];
  const running = steps.find((s) => s.state === "running");
  if (running) return running.index;
  const failed = steps.find((s) => s.result === "FAILURE" || s.result === "EXCEPTION");
  if (failed) return failed.index;
  const withLog = [...steps].reverse().find((s) => s.log && s.log.bytes > 0);
  if (withLog) return withLog.index;
  return steps.length ? steps[steps.length - 1].index : null;
}

function patchButton(patch, flash) {
  return h(
    "button",
    {
      type: "button",
      class: "patch-download",
      onclick: async () => {
        if (!auth.token()) {
          flash("Downloading a patch needs a token: log in first.", "error");
          return;
        }
        try {
          const resp = await fetch(apiUrl(`/patches/${patch.sha256}`), { headers: { Authorization: `Bearer ${auth.token()}` } });
          if (!resp.ok) {
            let msg = `${resp.status}`;
            try {
              msg = (await resp.json()).error.message;
            } catch {
              /* not JSON */
            }
            throw new Error(msg);
          }
          const url = URL.createObjectURL(await resp.blob());
          const a = h("a", { href: url, download: `${patch.sha256.slice(0, 12)}.patch` });
          document.body.appendChild(a);
          a.click();
          a.remove();
          setTimeout(() => URL.revokeObjectURL(url), 10000);
        } catch (e) {
          flash(`Patch download refused: ${e.message}`, "error");
        }
      },
    },
    `download patch (${fmtBytes(patch.size)})`,
  );
}

export async function render(ctx) {
  const { root } = ctx;
  const id = Number(ctx.params[0]);
  const fixedStep = ctx.params[1] !== undefined ? Number(ctx.params[1]) : null;
  loading(root, `build ${id}`);

  let build = await get(`/builds/${id}`);
  if (!ctx.alive()) return;
  let job = null;
  const jobId = build.properties && build.properties.job_id;
  if (jobId) {
    try {
      job = await get(`/jobs/${encodeURIComponent(jobId)}`);
    } catch {
      job = null;
    }
  }

  const head = h("div");
  const infoBox = h("div");
  const source = h("div");
  const stepsBox = h("div");
  const logBox = h("div", { id: "logbox" });
  const props = h("div");
  let viewer = null;
  let viewerStep = null;
  ctx.onCleanup(() => viewer && viewer.destroy());

  const drawHead = () => {
    const b = build;
    ctx.title(`${b.builder} #${b.number}`);
    const finished = b.state === "finished";
    replace(
      head,
      h(
        "h1",
        null,
        builderLink(b.builder),
        ` #${b.number} `,
        h("span", { id: "build-result", class: "badge-wrap", dataset: { result: b.result || "", state: b.state } }, badge(b.result, b.state)),
      ),
      h(
        "div",
        { class: "actions" },
        !finished ? cancelBuildButton(b.id, ctx.flash) : null,
        rebuildButton(b.id, ctx.flash),
      ),
    );
    replace(
      infoBox,
      kv(
        [
          ["state", b.state],
          ["result", b.result],
          b.text ? ["why it ended", b.text] : null,
          ["slave", slaveLink(b.slave)],
          ["reason", b.reason],
          ["requested", fmtTime(b.created_ms)],
          ["started", fmtTime(b.started_ms)],
          ["finished", fmtTime(b.finished_ms)],
          ["duration", b.duration_ms !== null && b.duration_ms !== undefined ? fmtDuration(b.duration_ms) : b.started_ms ? elapsed(b.started_ms) : null],
          ["build id / request", `${b.id} / ${b.request_id ?? ""}`],
        ],
        { class: "kv", id: "build-info" },
      ),
    );
  };

  const drawSource = () => {
    const p = build.properties || {};
    const got = build.got_revision || p.got_revision;
    replace(
      source,
      kv(
        [
          p.repository ? ["repository", p.repository] : null,
          p.branch ? ["branch", p.branch] : null,
          ["revision", p.revision ? h("code", null, p.revision) : h("span", { class: "muted" }, p.repository ? "head of the branch" : "none (no repository)")],
          ["got revision", got ? h("code", null, got) : null],
          jobId ? ["try job", jobLink(jobId)] : null,
          job ? ["author", `${job.author || ""}${job.email ? ` <${job.email}>` : ""}`] : p.owner ? ["owner", p.owner] : null,
          job && job.description ? ["description", job.description] : null,
          job && job.review_url ? ["review", h("a", { href: job.review_url, rel: "noopener noreferrer", class: "review-url" }, job.review_url)] : null,
          job && job.patchset ? ["patchset", job.patchset] : null,
          job && job.patch ? ["patch", job.patch.size ? patchButton(job.patch, ctx.flash) : h("span", { class: "muted" }, "empty (the base revision as it is)")] : null,
          p.tests ? ["tests", p.tests] : null,
        ],
        { class: "kv", id: "build-source" },
      ),
    );
  };

  const drawSteps = () => {
    const shown = viewerStep;
    replace(
      stepsBox,
      (build.steps || []).length
        ? table(
            ["#", "step", "result", "duration", "info", "log"],
            build.steps.map((s) =>
              h(
                "tr",
                { class: s.index === shown ? "selected" : null, dataset: { step: s.index, state: s.state, result: s.result || "" } },
                h("td", { class: "num" }, String(s.index)),
                h("td", null, h("a", { href: `#/builds/${build.id}/steps/${s.index}`, class: "step-link" }, s.name)),
                h("td", null, badge(s.result, s.state)),
                h(
                  "td",
                  null,
                  s.duration_ms !== null && s.duration_ms !== undefined
                    ? fmtDuration(s.duration_ms)
                    : s.started_ms && !s.finished_ms
                      ? elapsed(s.started_ms)
                      : "",
                ),
                h(
                  "td",
                  { class: "step-text" },
                  s.text || "",
                  s.timed_out ? h("span", { class: "badge r-exception" }, "timed out") : null,
                  s.warnings ? h("span", { class: "badge r-warnings step-warnings" }, `${s.warnings} warning${s.warnings === 1 ? "" : "s"}`) : null,
                  s.info ? h("div", { class: "step-info" }, String(s.info)) : null,
                  statsText(s.stats) ? h("div", { class: "step-stats", title: "stats reported by the step" }, statsText(s.stats)) : null,
                  s.command && s.command.length ? h("div", { class: "command", title: "the command that ran" }, visible(s.command.join(" "))) : null,
                ),
                h(
                  "td",
                  null,
                  s.log ? h("span", { class: "muted log-size" }, fmtBytes(s.log.bytes || 0)) : "",
                  " ",
                  h("a", { href: apiUrl(`/builds/${build.id}/steps/${s.index}/log`), download: `build-${build.id}-step-${s.index}.log` }, "raw"),
                ),
              ),
            ),
            { class: "grid steps", id: "steps" },
          )
        : h("p", { class: "muted" }, "No steps yet."),
    );
  };

  const drawProps = () => {
    const p = build.properties || {};
    const keys = Object.keys(p).sort();
    replace(
      props,
      keys.length
        ? table(
            ["name", "value"],
            keys.map((k) => h("tr", null, h("td", null, k), h("td", null, typeof p[k] === "string" ? p[k] : JSON.stringify(p[k])))),
            { class: "grid", id: "properties" },
          )
        : h("p", { class: "muted" }, "No properties."),
    );
  };

  const showStep = (index) => {
    if (index === null || index === undefined) {
      replace(logBox, h("p", { class: "muted" }, "No step has started yet."));
      return;
    }
    if (viewer && viewerStep === index) return;
    if (viewer) viewer.destroy();
    const s = (build.steps || []).find((x) => x.index === index);
    if (!s) {
      replace(logBox, h("p", { class: "muted" }, `Step ${index} has not started yet.`));
      viewer = null;
      viewerStep = null;
      return;
    }
    viewerStep = index;
    viewer = new LogViewer({
      buildId: build.id,
      step: index,
      size: s.log ? s.log.bytes : 0,
      running: s.state === "running" || (s.state !== "done" && build.state !== "finished"),
      stepName: s.name,
      onSize: (size) => {
        const st = (build.steps || []).find((x) => x.index === index);
        if (st && st.log && size > (st.log.bytes || 0)) st.log.bytes = size;
        const cell = stepsBox.querySelector(`tr[data-step="${index}"] .log-size`);
        if (cell && st && st.log) cell.textContent = fmtBytes(st.log.bytes);
      },
    });
    replace(logBox, viewer.el);
    viewer.start();
    drawSteps();
  };

  const refetch = debounce(async () => {
    try {
      const b = await get(`/builds/${id}`);
      if (!ctx.alive()) return;
      build = b;
      drawHead();
      drawSteps();
      drawProps();
      if (viewer) {
        const s = build.steps.find((x) => x.index === viewerStep);
        if (s) viewer.setRunning(s.state === "running", s.log ? s.log.bytes : undefined);
      }
    } catch {
      /* keep what is shown */
    }
  }, 200);
  ctx.onCleanup(refetch.cancel);

  ctx.subscribe("builds", (ev) => {
    if (ev.type === "reconnected") {
      refetch();
      return;
    }
    if (ev.type === "build" && ev.build.id === id) {
      Object.assign(build, ev.build);
      drawHead();
      if (ev.event === "finished" && viewer) viewer.setRunning(false);
      refetch();
    } else if (ev.type === "step" && ev.build_id === id) {
      const steps = build.steps || (build.steps = []);
      const i = steps.findIndex((s) => s.index === ev.step.index);
      if (i >= 0) steps[i] = { ...steps[i], ...ev.step };
      else {
        steps.push({ ...ev.step, log: { bytes: 0 } });
        steps.sort((a, b) => a.index - b.index);
      }
      if (viewer && viewerStep === ev.step.index) viewer.setRunning(ev.step.state === "running");
      if (ev.step.state === "running" && (fixedStep === null || fixedStep === ev.step.index)) showStep(ev.step.index);
      drawSteps();
      refetch();
    }
  });
  ctx.every(1000, () => tickTimes(root));

  drawHead();
  drawSource();
  drawSteps();
  drawProps();
  replace(
    root,
    head,
    h("div", { class: "cards" }, section("Build", infoBox), section("Source", source)),
    section("Steps", stepsBox),
    logBox,
    section("Properties", props),
  );
  showStep(fixedStep !== null ? fixedStep : pickStep(build));
  ctx.ready();
}
