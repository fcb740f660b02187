// build.js - one build: a short head (result, slave, reason, times, who is
// in the blamelist), then its steps beside the log viewer (logview.js), so
// that the log starts near the top of the screen; below them what the
// build is (state, times), its source (revision, got_revision, the try
// job's patch, author and review URL), its blamelist (the changes it is
// the first to build, each linking to its change page) and its
// properties. Cancel and rebuild for logged-in users.
//
// Above the steps, a build whose tests failed lists its failing (and
// flaky) tests first: each test's name, whether a try build's failure is
// new or also failing without the patch, its message and its own lines
// of the log, with a link that opens the viewer on those lines.
//
// Route #/builds/ID shows the log of the running step and follows the
// build from step to step; #/builds/ID/steps/S stays on step S, and
// #/builds/ID/steps/S/L120 or .../L120-L140 shows those lines of its log,
// highlighted. Moving between steps and lines does not draw the page
// again (ctx.onRoute), and selecting lines in the viewer puts them into
// the address without a new history entry.
// Live: the "builds" topic updates the steps as they start and end; the
// viewer follows the running step's log on log:ID:S.

import { auth, apiUrl, get } from "../lib/api.js";
import { debounce, h, replace, table } from "../lib/dom.js";
import { fmtBytes, fmtDuration, fmtTime } from "../lib/format.js";
import { lineRef } from "../lib/errors.js";
import { LogViewer } from "../lib/logview.js";
import { badge, builderLink, buttonKeeper, cancelBuildButton, changeLink, elapsed, jobLink, kv, loading, rebuildButton, section, slaveLink, tickTimes } from "../lib/ui.js";

const STEPS_OPEN_KEY = "tf-steps-open";

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

// Authors of a blamelist, each once, in order: "Ann, Bob and 3 more".
function authorsText(changes, max = 3) {
  const names = [];
  for (const c of changes) {
    const n = c.author || c.email || "";
    if (n && !names.includes(n)) names.push(n);
  }
  if (names.length <= max) return names.join(", ");
  return `${names.slice(0, max).join(", ")} and ${names.length - max} more`;
}

function failedResult(r) {
  return r === "FAILURE" || r === "EXCEPTION";
}

export async function render(ctx) {
  const { root } = ctx;
  const id = Number(ctx.params[0]);
  let fixedStep = ctx.params[1] !== undefined ? Number(ctx.params[1]) : null;
  const wantLines = (p) => (p[2] !== undefined ? [Number(p[2]), Number(p[3] ?? p[2])].sort((a, b) => a - b) : null);
  let lines = wantLines(ctx.params);
  loading(root, `build ${id}`);
  const keep = buttonKeeper();

  let build = await get(`/builds/${id}`);
  if (!ctx.alive()) return;
  let job = null;
  const jobId = build.properties && build.properties.job_id;
  // The builder's error patterns, when the master gives them (else the
  // log viewer's defaults).
  const [jobAnswer, builderInfo] = await Promise.all([
    jobId ? get(`/jobs/${encodeURIComponent(jobId)}`).catch(() => null) : null,
    get(`/builders/${encodeURIComponent(build.builder)}`).catch(() => null),
  ]);
  if (!ctx.alive()) return;
  job = jobAnswer;
  const errorPatterns = builderInfo && Array.isArray(builderInfo.error_patterns) ? builderInfo.error_patterns : null;

  const head = h("div", { class: "build-head" });
  const infoBox = h("div");
  const source = h("div");
  const blameBox = h("div");
  const stepsBox = h("div");
  const logBox = h("div", { id: "logbox", class: "logbox" });
  const props = h("div");
  const testsBox = h("div", { class: "tests-box" });
  let viewer = null;
  let viewerStep = null;
  ctx.onCleanup(() => viewer && viewer.destroy());

  let stepsOpen = true;
  try {
    stepsOpen = localStorage.getItem(STEPS_OPEN_KEY) !== "0";
  } catch {
    /* private mode */
  }
  const stepsSummary = h("summary", { class: "steps-summary" });
  const stepsPanel = h("details", { class: "steps-panel", id: "steps-panel", open: stepsOpen }, stepsSummary, stepsBox);
  stepsPanel.addEventListener("toggle", () => {
    try {
      localStorage.setItem(STEPS_OPEN_KEY, stepsPanel.open ? "1" : "0");
    } catch {
      /* private mode */
    }
  });

  const drawHead = () => {
    const b = build;
    ctx.title(`${b.builder} #${b.number}`);
    const finished = b.state === "finished";
    const changes = b.changes || [];
    const dur = b.duration_ms !== null && b.duration_ms !== undefined ? fmtDuration(b.duration_ms) : b.started_ms ? elapsed(b.started_ms) : null;
    const sep = () => h("span", { class: "sep", "aria-hidden": "true" }, " · ");
    const meta = [
      b.slave ? ["on ", slaveLink(b.slave)] : null,
      b.reason ? h("span", { class: "build-reason" }, b.reason) : null,
      b.started_ms ? h("span", { title: fmtTime(b.started_ms) }, `started ${fmtTime(b.started_ms)}`) : h("span", null, `requested ${fmtTime(b.created_ms)}`),
      dur ? [finished ? "took " : "running for ", dur] : null,
      changes.length ? h("span", { class: "blame-summary" }, `${changes.length} change${changes.length === 1 ? "" : "s"} by ${authorsText(changes)}`) : null,
      b.text ? h("span", { class: "build-text" }, b.text) : null,
    ].filter(Boolean);
    replace(
      head,
      h(
        "div",
        { class: "build-title" },
        h(
          "h1",
          null,
          builderLink(b.builder),
          ` #${b.number} `,
          h("span", { id: "build-result", class: "badge-wrap", dataset: { result: b.result || "", state: b.state } }, badge(b.result, b.state)),
        ),
        h("div", { class: "actions" }, !finished ? keep(`cancel ${b.id}`, () => cancelBuildButton(b.id, ctx.flash)) : null, keep(`rebuild ${b.id}`, () => rebuildButton(b.id, ctx.flash))),
      ),
      h(
        "p",
        { class: "build-meta", id: "build-meta" },
        meta.map((m, i) => [i ? sep() : null, m]),
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

  // The blamelist: the changes this build is the first to build.
  const drawBlame = () => {
    const changes = build.changes || [];
    replace(
      blameBox,
      changes.length
        ? h(
            "ol",
            { class: "blamelist", id: "blamelist" },
            changes.map((c) =>
              h(
                "li",
                { dataset: { change: c.id } },
                changeLink(c, h("code", null, (c.revision || "").slice(0, 10) || `change ${c.id}`)),
                " ",
                h("span", { class: "change-message" }, c.message || ""),
                h(
                  "div",
                  { class: "change-meta muted" },
                  c.author || c.email || "",
                  c.files && c.files.length ? ` · ${c.files.length} file${c.files.length === 1 ? "" : "s"}` : "",
                ),
              ),
            ),
          )
        : h(
            "p",
            { class: "muted", id: "blamelist-empty" },
            jobId ? "A try job: its change is the patch (see Source)." : "No new change: a forced build, a rebuild, or a build of a change already built.",
          ),
    );
  };

  const drawSteps = () => {
    const shown = viewerStep;
    const steps = build.steps || [];
    const failed = steps.filter((s) => failedResult(s.result)).length;
    const done = steps.filter((s) => s.state === "done").length;
    replace(
      stepsSummary,
      h("span", { class: "steps-title" }, "Steps"),
      " ",
      h("span", { class: "muted" }, `${done} of ${steps.length} done${failed ? `, ${failed} failed` : ""}`),
    );
    replace(
      stepsBox,
      steps.length
        ? table(
            ["#", "step", "result", "log"],
            steps.map((s) =>
              h(
                "tr",
                {
                  class: s.index === shown ? "selected" : null,
                  "aria-current": s.index === shown ? "step" : null,
                  dataset: { step: s.index, state: s.state, result: s.result || "" },
                },
                h("td", { class: "num" }, String(s.index)),
                h(
                  "td",
                  { class: "step-text" },
                  h("a", { href: `#/builds/${build.id}/steps/${s.index}`, class: "step-link" }, s.name),
                  s.text ? h("div", { class: "step-summary" }, s.text) : null,
                  s.timed_out ? h("span", { class: "badge r-exception" }, "timed out") : null,
                  s.warnings ? h("span", { class: "badge r-warnings step-warnings" }, `${s.warnings} warning${s.warnings === 1 ? "" : "s"}`) : null,
                  s.info ? h("div", { class: "step-info" }, String(s.info)) : null,
                  statsText(s.stats) ? h("div", { class: "step-stats", title: "stats reported by the step" }, statsText(s.stats)) : null,
                  s.command && s.command.length
                    ? h("details", { class: "step-more" }, h("summary", null, "command"), h("div", { class: "command", title: "the command that ran" }, visible(s.command.join(" "))))
                    : null,
                ),
                h(
                  "td",
                  null,
                  badge(s.result, s.state),
                  h(
                    "div",
                    { class: "step-duration" },
                    s.duration_ms !== null && s.duration_ms !== undefined ? fmtDuration(s.duration_ms) : s.started_ms && !s.finished_ms ? elapsed(s.started_ms) : "",
                  ),
                ),
                h(
                  "td",
                  { class: "step-log" },
                  h("a", { href: apiUrl(`/builds/${build.id}/steps/${s.index}/log`), download: `build-${build.id}-step-${s.index}.log`, title: "download the raw log" }, "raw"),
                  s.log ? h("div", { class: "muted log-size" }, fmtBytes(s.log.bytes || 0)) : null,
                ),
              ),
            ),
            { class: "grid steps", id: "steps" },
          )
        : h("p", { class: "muted" }, "No steps yet."),
    );
  };

  // The failing and flaky tests (GET /builds/ID/tests), when there are.
  let testsShown = null;
  const drawTests = async () => {
    let t;
    try {
      t = await get(`/builds/${id}/tests?status=fail,flaky&limit=50`);
    } catch {
      return; /* keep what is shown */
    }
    if (!ctx.alive()) return;
    const c = t.counts || {};
    const key = `${c.fail}/${c.flaky}/${t.tests.length}/${t.new_failures}`;
    if (key === testsShown) return;
    testsShown = key;
    if (!c.fail && !c.flaky) {
      replace(testsBox);
      return;
    }
    const parts = [`${c.fail} failing test${c.fail === 1 ? "" : "s"}`];
    if (t.try && c.fail) parts.push(` (${t.new_failures} new, ${c.fail - t.new_failures} also failing without the patch)`);
    if (c.flaky) parts.push(`, ${c.flaky} flaky`);
    replace(
      testsBox,
      h(
        "section",
        { class: "card failing-tests", id: "failing-tests" },
        h("h2", null, parts.join(""), h("span", { class: "muted tests-total" }, ` of ${c.total} tests`)),
        h(
          "ul",
          { class: "tests-list" },
          t.tests.map((x) => {
            const log = x.log || null;
            const end = log ? log.line + Math.max(1, Math.min(log.lines, 40)) - 1 : null;
            return h(
              "li",
              { class: ["test", `test-${x.status}`], dataset: { test: x.name, status: x.status, failure: x.failure || "" } },
              h(
                "div",
                { class: "test-head" },
                h("span", { class: ["badge", x.status === "fail" ? "r-failure" : "r-warnings"] }, x.status === "fail" ? "FAIL" : "FLAKY"),
                " ",
                x.suite ? h("span", { class: "test-suite" }, `${x.suite} :: `) : null,
                h("strong", { class: "test-name" }, x.name),
                x.failure === "new" ? h("span", { class: "test-mark test-new" }, " new") : null,
                x.failure === "also_failing_without_patch"
                  ? h("span", { class: "test-mark test-known", title: t.reference_build ? `build ${t.reference_build.id} failed it too` : "" }, " also failing without the patch")
                  : null,
                log ? [" · ", h("a", { class: "test-log-link", href: `#/builds/${id}/steps/${x.step}/${lineRef(log.line, end)}` }, `${x.step_name || `step ${x.step}`}, line ${log.line}`)] : null,
              ),
              x.message ? h("pre", { class: "test-message" }, visible(x.message)) : null,
              log && log.excerpt ? h("pre", { class: "test-lines" }, visible(log.excerpt)) : null,
            );
          }),
        ),
        t.truncated ? h("p", { class: "muted" }, h("a", { href: apiUrl(`/builds/${id}/tests?status=fail,flaky&limit=5000`) }, "all failing tests")) : null,
      ),
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
            keys.map((k) => h("tr", null, h("td", null, k), h("td", { class: "prop-value" }, typeof p[k] === "string" ? p[k] : JSON.stringify(p[k])))),
            { class: "grid", id: "properties" },
          )
        : h("p", { class: "muted" }, "No properties."),
    );
  };

  // How many steps the build has or will have.
  const stepCount = () => Math.max((build.steps || []).length, Number.isInteger(build.nsteps) ? build.nsteps : 0);

  const noStep = (text) => {
    if (viewer) viewer.destroy();
    viewer = null;
    viewerStep = null;
    replace(logBox, h("p", { class: "muted log-missing", id: "log-missing" }, text));
    drawSteps();
  };

  // Puts the viewer on step index; want: lines to show there ([a, b]).
  const showStep = (index, want) => {
    if (index === null || index === undefined) {
      noStep("No step has started yet.");
      return;
    }
    if (viewer && viewerStep === index) {
      if (want) viewer.reveal(want[0], want[1]);
      return;
    }
    const s = (build.steps || []).find((x) => x.index === index);
    if (!s || (s.state === "pending" && !s.started_ms)) {
      const n = stepCount();
      if (index >= n && (build.state === "finished" || n > 0)) {
        noStep(`No step ${index} in this build: it has ${n} step${n === 1 ? "" : "s"}${n ? ` (${n === 1 ? "0" : `0–${n - 1}`})` : ""}.`);
      } else {
        noStep(build.state === "finished" ? `Step ${index} did not run.` : `Step ${index} has not started yet.`);
      }
      return;
    }
    if (viewer) viewer.destroy();
    viewerStep = index;
    viewer = new LogViewer({
      buildId: build.id,
      step: index,
      size: s.log ? s.log.bytes : 0,
      running: s.state === "running" || (s.state !== "done" && build.state !== "finished"),
      failed: failedResult(s.result),
      stepName: s.name,
      errorPatterns,
      onSelect: (a, b) => {
        history.replaceState(null, "", `#/builds/${build.id}/steps/${index}/${lineRef(a, b)}`);
      },
      onSize: (size) => {
        const st = (build.steps || []).find((x) => x.index === index);
        if (st && st.log && size > (st.log.bytes || 0)) st.log.bytes = size;
        const cell = stepsBox.querySelector(`tr[data-step="${index}"] .log-size`);
        if (cell && st && st.log) cell.textContent = fmtBytes(st.log.bytes);
      },
    });
    replace(logBox, viewer.el);
    viewer.start();
    if (want) viewer.reveal(want[0], want[1]);
    drawSteps();
  };

  // Another step or other lines of this build: no new page.
  ctx.onRoute((params) => {
    if (Number(params[0]) !== id) return false;
    fixedStep = params[1] !== undefined ? Number(params[1]) : null;
    lines = wantLines(params);
    showStep(fixedStep !== null ? fixedStep : pickStep(build), lines);
    return true;
  });

  const refetch = debounce(async () => {
    try {
      const b = await get(`/builds/${id}`);
      if (!ctx.alive()) return;
      build = b;
      drawHead();
      drawSteps();
      drawBlame();
      drawProps();
      drawTests();
      if (viewer) {
        const s = build.steps.find((x) => x.index === viewerStep);
        if (s) viewer.setRunning(s.state === "running", s.log ? s.log.bytes : undefined);
      } else if (fixedStep !== null) {
        showStep(fixedStep, lines);
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
  drawBlame();
  drawSteps();
  drawProps();
  await drawTests();
  if (!ctx.alive()) return;
  replace(
    root,
    head,
    testsBox,
    h("div", { class: ["build-main"] }, stepsPanel, logBox),
    h(
      "div",
      { class: "cards" },
      section("Build", infoBox),
      section("Source", source),
      h("section", { class: "card", id: "build-changes" }, h("h2", null, "Blamelist"), blameBox),
    ),
    section("Properties", props),
  );
  showStep(fixedStep !== null ? fixedStep : pickStep(build), lines);
  ctx.ready();
}
