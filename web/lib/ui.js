// ui.js - small pieces the pages share: result badges, links, times that
// age by themselves, and the action buttons (force, cancel, rebuild) that
// send the logged-in user's token and show the master's answer.

import { auth, post } from "./api.js";
import { h } from "./dom.js";
import { health } from "./health.js";
import { fmtAgo, fmtDuration, fmtTime, resultClass, resultText, serverNow } from "./format.js";

export function badge(result, state, extra) {
  return h("span", { class: ["badge", resultClass(result, state)] }, extra || resultText(result, state));
}

export function builderLink(name) {
  return h("a", { href: `#/builders/${encodeURIComponent(name)}`, class: "builder-link" }, name);
}

export function slaveLink(name) {
  if (!name) return "";
  return h("a", { href: `#/slaves/${encodeURIComponent(name)}`, class: "slave-link" }, name);
}

export function buildLink(b, text) {
  if (!b || b.id === null || b.id === undefined) return "";
  return h("a", { href: `#/builds/${b.id}`, class: "build-link" }, text || `#${b.number ?? b.id}`);
}

// Who broke it and since when, for a red builder (the API's failing_since,
// failed_step and suspects; null while the builder is green):
// "red since #12 · failed step: test · suspects: Ann, Bob".
export function failingSince(b) {
  const since = b.failing_since || b.since;
  if (!since) return null;
  const parts = ["red since ", buildLink(since)];
  if (b.failed_step) parts.push(" · failed step: ", h("span", { class: "failed-step" }, b.failed_step.name));
  const who = (b.suspects || []).map((s) => s.author || s.email).filter(Boolean);
  if (who.length) parts.push(" · suspects: ", h("span", { class: "suspects" }, who.join(", ")));
  return h("div", { class: "failing-since" }, ...parts);
}

// A change's page (#/changes/ID); c is a change or its id.
export function changeLink(c, text) {
  const id = typeof c === "object" && c ? c.id : c;
  if (id === null || id === undefined) return text || "";
  return h("a", { href: `#/changes/${id}`, class: "change-link" }, text || `change ${id}`);
}

export function jobLink(id, text) {
  return h("a", { href: `#/jobs/${id}`, class: "job-link" }, text || `job ${id}`);
}

// "3 min ago" that stays right: the ticker (tickTimes) updates it.
export function ago(ms) {
  if (ms === null || ms === undefined) return h("span", { class: "muted" }, "never");
  return h("time", { dataset: { ago: ms }, title: fmtTime(ms) }, fmtAgo(ms));
}

// Elapsed time since ms, kept current by tickTimes.
export function elapsed(ms) {
  if (ms === null || ms === undefined) return "";
  return h("span", { class: "elapsed", dataset: { since: ms }, title: `since ${fmtTime(ms)}` }, fmtDuration(serverNow() - ms));
}

// Updates the times in root. While the master is unreachable the elapsed
// times stand still: what is shown as running may have ended meanwhile,
// and a counter going on would say it still runs.
export function tickTimes(root) {
  const now = serverNow();
  for (const el of root.querySelectorAll("[data-ago]")) el.textContent = fmtAgo(Number(el.dataset.ago), now);
  if (health.down) return;
  for (const el of root.querySelectorAll("[data-since]")) el.textContent = fmtDuration(now - Number(el.dataset.since));
}

export function section(title, ...children) {
  return h("section", { class: "card" }, h("h2", null, title), children);
}

// A two-column table of name/value pairs (values are children for h()).
export function kv(pairs, attrs) {
  return h(
    "table",
    attrs || { class: "kv" },
    h(
      "tbody",
      null,
      pairs.filter(Boolean).map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, v === null || v === undefined || v === "" ? h("span", { class: "muted" }, "—") : v))),
    ),
  );
}

export function loading(root, what) {
  root.replaceChildren(h("p", { class: "muted loading" }, `loading ${what}…`));
}

// A button running an action. fn() returns a promise of the API's answer;
// onDone(answer) says what happened. Errors (401 without a token, 409, ...)
// show the master's own message.
export function actionButton(label, fn, { flash, onDone, cls, title, confirmLabel } = {}) {
  const btn = h("button", { type: "button", class: ["action", cls], title }, label);
  let armed = false;
  let timer = null;
  btn.addEventListener("click", async () => {
    if (confirmLabel && !armed) {
      // Destructive actions take a second click within 4 s.
      armed = true;
      btn.textContent = confirmLabel;
      btn.classList.add("armed");
      timer = setTimeout(() => {
        armed = false;
        btn.textContent = label;
        btn.classList.remove("armed");
      }, 4000);
      return;
    }
    clearTimeout(timer);
    armed = false;
    btn.classList.remove("armed");
    btn.textContent = label;
    btn.disabled = true;
    try {
      const answer = await fn();
      if (onDone) onDone(answer);
    } catch (e) {
      flash(`${label} refused: ${e.message}${!auth.token() && e.status === 401 ? " (log in with a token first)" : ""}`, "error");
    } finally {
      btn.disabled = false;
    }
  });
  return btn;
}

// What a queued request looks like in a flash message.
export function queuedMessage(answer) {
  const pos = answer.position ? ` at position ${answer.position}` : "";
  return `Request ${answer.request_id} queued for ${answer.builder}${pos}.`;
}

export function forceForm(builder, flash) {
  const reason = h("input", {
    type: "text",
    name: "reason",
    class: "reason",
    placeholder: "reason (optional)",
    maxLength: 1024,
    size: 30,
  });
  const btn = h("button", { type: "submit", class: "action force" }, "Force build");
  return h(
    "form",
    {
      class: "force-form",
      onsubmit: async (e) => {
        e.preventDefault();
        btn.disabled = true;
        try {
          const body = reason.value.trim() ? { reason: reason.value.trim() } : {};
          const answer = await post(`/builders/${encodeURIComponent(builder)}/force`, body);
          flash(queuedMessage(answer));
          reason.value = "";
        } catch (err) {
          flash(`Force build refused: ${err.message}${!auth.token() && err.status === 401 ? " (log in with a token first)" : ""}`, "error");
        } finally {
          btn.disabled = false;
        }
      },
    },
    reason,
    btn,
  );
}

// The same button across a page's redraws: pages draw themselves again on
// live events, and a new button would forget a first click waiting for
// its confirmation (the second click would only arm the new one). A page
// makes one keeper; keep(key, make) gives the button made for key before,
// or makes it.
export function buttonKeeper() {
  const kept = new Map();
  return (key, make) => {
    let b = kept.get(key);
    if (!b) {
      b = make();
      kept.set(key, b);
    }
    return b;
  };
}

export function cancelBuildButton(id, flash) {
  return actionButton("Cancel build", () => post(`/builds/${id}/cancel`), {
    flash,
    cls: "danger cancel-build",
    confirmLabel: "Really cancel?",
    onDone: () => flash(`Build ${id} is being cancelled.`),
  });
}

export function cancelRequestButton(id, flash) {
  return actionButton("Cancel", () => post(`/requests/${id}/cancel`), {
    flash,
    cls: "danger small cancel-request",
    confirmLabel: "Really?",
    onDone: () => flash(`Request ${id} cancelled.`),
  });
}

export function cancelJobButton(id, flash) {
  return actionButton("Cancel job", () => post(`/jobs/${id}/cancel`), {
    flash,
    cls: "danger cancel-job",
    confirmLabel: "Really cancel?",
    onDone: () => flash(`Job ${id} is being cancelled.`),
  });
}

export function rebuildButton(id, flash) {
  return actionButton("Rebuild", () => post(`/builds/${id}/rebuild`), {
    flash,
    cls: "rebuild",
    title: "queue a new build with the same source and properties",
    onDone: (a) => flash(queuedMessage(a)),
  });
}
