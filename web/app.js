// app.js - the status pages' entry: routing, the header (navigation, live
// state, login) and the flash messages.
//
// Routes are URL hashes (#/builds/12) because the master serves web_root
// as plain files: index.html is the only document, every page is drawn by
// a module of pages/. A page is a function render(ctx) that draws into
// ctx.root and registers what to undo with ctx.onCleanup (live
// subscriptions, timers); navigating away runs those and drops the root,
// so a late answer for an old page draws into a detached element, not
// into the new page. A page may take a change of the hash within itself
// (ctx.onRoute: the build page moves between steps and log lines without
// drawing itself again).
//
// The banner under the header says when the master cannot be reached
// (health.js): the data shown is stale and the page retries by itself;
// once the master answers again the banner goes, the flash messages that
// said "cannot reach the master" go with it, and every page refetches
// what it shows (a page that could not load at all loads again).

import { auth, get } from "./lib/api.js";
import { h, replace } from "./lib/dom.js";
import { fmtTime } from "./lib/format.js";
import { health } from "./lib/health.js";
import { live } from "./lib/live.js";
import * as summary from "./pages/summary.js";
import * as waterfall from "./pages/waterfall.js";
import * as consolePage from "./pages/console.js";
import * as builder from "./pages/builder.js";
import * as build from "./pages/build.js";
import * as slaves from "./pages/slaves.js";
import * as slave from "./pages/slave.js";
import * as jobs from "./pages/jobs.js";
import * as job from "./pages/job.js";
import * as change from "./pages/change.js";

const NAME = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}";
const routes = [
  [/^\/?$/, "summary", summary],
  [/^\/waterfall$/, "waterfall", waterfall],
  [/^\/console$/, "console", consolePage],
  [new RegExp(`^/builders/(${NAME})$`), "builders", builder],
  [/^\/builds\/(\d+)(?:\/steps\/(\d+)(?:\/L(\d+)(?:-L?(\d+))?)?)?$/, "builds", build],
  [/^\/slaves$/, "slaves", slaves],
  [new RegExp(`^/slaves/(${NAME})$`), "slaves", slave],
  [/^\/jobs$/, "jobs", jobs],
  [/^\/jobs\/(\d+)$/, "jobs", job],
  [/^\/changes\/(\d+)$/, "console", change],
];

// The configured name, remembered from the last visit so that the first
// title and header already say it; /api/v1/master confirms it.
const NAME_KEY = "tf-master-name";
let masterName = (() => {
  try {
    return localStorage.getItem(NAME_KEY) || "TestFarm";
  } catch {
    return "TestFarm";
  }
})();
let current = null; // {cleanups, root, mod, title, onRoute, failedOffline}

function applyTitle() {
  const t = current && current.title;
  document.title = t ? `${t} – ${masterName}` : masterName;
}

// --- flash messages ---

// Shows a message under the header; kind "ok" or "error". Errors stay
// until closed or replaced, other messages for 8 s.
export function flash(message, kind = "ok", ...extra) {
  const box = document.getElementById("flash");
  const item = h(
    "div",
    { class: ["flash", `flash-${kind}`] },
    h("span", { class: "flash-text" }, message),
    extra,
    h("button", { type: "button", class: "flash-close", title: "dismiss", onclick: () => item.remove() }, "×"),
  );
  // Messages about an unreachable master go once it answers again.
  if (/cannot reach the master/.test(message)) item.dataset.unreachable = "1";
  replace(box, item);
  if (kind !== "error") setTimeout(() => item.remove(), 8000);
  return item;
}

// --- the "master unreachable" banner ---

function drawBanner() {
  const banner = document.getElementById("banner");
  document.body.classList.toggle("stale", health.down);
  if (!health.down) {
    banner.hidden = true;
    replace(banner);
    return;
  }
  const secs = Math.max(0, Math.round((Date.now() - health.lastOkMs) / 1000));
  const text = `The data on this page is stale (last answer at ${fmtTime(health.lastOkMs)}, ${secs} s ago). Retrying…`;
  if (banner.hidden || !banner.firstChild) {
    replace(banner, h("strong", null, "Master unreachable."), h("span", { class: "banner-text" }, text));
    banner.hidden = false;
  } else {
    banner.querySelector(".banner-text").textContent = text;
  }
}

function onHealth(down) {
  drawBanner();
  if (down) return;
  for (const el of document.querySelectorAll("#flash [data-unreachable]")) el.remove();
  if (current && current.failedOffline) navigate(true);
  else live.notifyAll({ type: "reconnected" });
}

// --- login ---

function drawLogin() {
  const box = document.getElementById("login");
  const token = auth.token();
  if (token) {
    const u = auth.user();
    const who = u ? u.name || u.email || "user" : "user";
    replace(
      box,
      h("span", { class: "who", title: "actions send this token" }, `logged in as ${who}${u && u.admin ? " (admin)" : ""}`),
      " ",
      h("button", { type: "button", id: "logout", onclick: () => auth.clear() }, "Log out"),
    );
    return;
  }
  const input = h("input", {
    type: "password",
    id: "token",
    name: "token",
    placeholder: "API token",
    autocomplete: "off",
    size: 18,
    title: "your committer token (tf-master user add) or the admin token",
  });
  const form = h(
    "form",
    {
      id: "loginform",
      onsubmit: async (e) => {
        e.preventDefault();
        const t = input.value.trim();
        if (!t) {
          flash("Enter a token to log in: committers get theirs from `tf-master user add`.", "error");
          return;
        }
        try {
          const me = await get("/whoami", null, { token: t });
          auth.set(t, me);
          flash(`Logged in as ${me.name || me.email || "admin"}.`);
        } catch (err) {
          flash(`Login refused: ${err.message}`, "error");
        }
      },
    },
    h("label", { for: "token", class: "visually-hidden" }, "API token"),
    input,
    h("button", { type: "submit" }, "Log in"),
  );
  replace(box, form);
}

// --- routing ---

function parseHash() {
  let raw = "/";
  try {
    raw = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  } catch {
    raw = location.hash.replace(/^#/, "");
  }
  const [path, qs] = raw.split("?");
  return { path, query: new URLSearchParams(qs || "") };
}

function match(path) {
  for (const [re, nav, mod] of routes) {
    const m = re.exec(path);
    if (m) return { nav, mod, params: m.slice(1) };
  }
  return null;
}

function navigate(force) {
  const { path, query } = parseHash();
  const found = match(path);
  // The page on screen may take the new address itself.
  if (force !== true && current && found && current.mod === found.mod && current.onRoute) {
    try {
      if (current.onRoute(found.params, query)) return;
    } catch (e) {
      console.error(e);
    }
  }
  if (current) {
    for (const f of current.cleanups.reverse()) {
      try {
        f();
      } catch (e) {
        console.error(e);
      }
    }
  }
  const main = document.getElementById("main");
  const root = h("div", { class: "page" });
  replace(main, root);
  const cleanups = [];
  current = { cleanups, root, mod: found && found.mod, title: null, onRoute: null, failedOffline: false };
  const here = current;
  for (const a of document.querySelectorAll("#nav a")) {
    const on = !!found && a.dataset.nav === found.nav;
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    here.title = "Not found";
    applyTitle();
    replace(root, h("h1", null, "No such page"), h("p", null, "Try the ", h("a", { href: "#/" }, "summary"), "."));
    root.dataset.ready = "1";
    return;
  }
  const ctx = {
    root,
    params: found.params,
    query,
    masterName: () => masterName,
    onCleanup: (f) => cleanups.push(f),
    alive: () => current && current.root === root,
    title: (t) => {
      here.title = t;
      if (current === here) applyTitle();
    },
    onRoute: (f) => {
      here.onRoute = f;
    },
    subscribe: (topic, fn) => cleanups.push(live.subscribe(topic, fn)),
    every: (ms, fn) => {
      const id = setInterval(fn, ms);
      cleanups.push(() => clearInterval(id));
    },
    ready: () => {
      root.dataset.ready = "1";
    },
    flash,
  };
  document.body.dataset.page = found.nav;
  Promise.resolve()
    .then(() => found.mod.render(ctx))
    .catch((e) => {
      if (!ctx.alive()) return;
      here.failedOffline = e.status === 0;
      replace(
        root,
        h("h1", null, "Could not load this page"),
        h("p", { class: "error" }, e.message),
        here.failedOffline ? h("p", { class: "muted" }, "It loads by itself once the master answers again.") : null,
      );
      root.dataset.ready = "1";
      root.dataset.error = "1";
    });
}

async function start() {
  const state = document.getElementById("livestate");
  live.onStatus((s) => {
    state.className = `livestate live-${s}`;
    state.textContent = s === "open" ? "live" : "offline";
    state.title = s === "open" ? "live feed connected: pages update by themselves" : "live feed disconnected; reconnecting";
  });
  health.onChange(onHealth);
  setInterval(() => health.down && drawBanner(), 1000);
  document.getElementById("skip").addEventListener("click", (e) => {
    // The hash is the page's address: move the focus instead.
    e.preventDefault();
    document.getElementById("main").focus();
  });
  document.getElementById("brand").textContent = masterName;
  live.connect();
  drawLogin();
  window.addEventListener("tf-auth", drawLogin);
  window.addEventListener("storage", (e) => {
    if (e.key === "tf-token") drawLogin();
  });
  window.addEventListener("hashchange", navigate);
  navigate();
  try {
    const m = await get("/master");
    masterName = m.name || "TestFarm";
    try {
      localStorage.setItem(NAME_KEY, masterName);
    } catch {
      /* private mode */
    }
    document.getElementById("brand").textContent = masterName;
    applyTitle();
  } catch {
    /* the page shows its own error */
  }
}

start();
