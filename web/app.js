// app.js - the status pages' entry: routing, the header (navigation, live
// state, login) and the flash messages.
//
// Routes are URL hashes (#/builds/12) because the master serves web_root
// as plain files: index.html is the only document, every page is drawn by
// a module of pages/. A page is a function render(ctx) that draws into
// ctx.root and registers what to undo with ctx.onCleanup (live
// subscriptions, timers); navigating away runs those and drops the root,
// so a late answer for an old page draws into a detached element, not
// into the new page.

import { auth, get } from "./lib/api.js";
import { h, replace } from "./lib/dom.js";
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

const NAME = "[A-Za-z0-9][A-Za-z0-9._-]{0,63}";
const routes = [
  [/^\/?$/, "summary", summary],
  [/^\/waterfall$/, "waterfall", waterfall],
  [/^\/console$/, "console", consolePage],
  [new RegExp(`^/builders/(${NAME})$`), "builders", builder],
  [/^\/builds\/(\d+)(?:\/steps\/(\d+))?$/, "builds", build],
  [/^\/slaves$/, "slaves", slaves],
  [new RegExp(`^/slaves/(${NAME})$`), "slaves", slave],
  [/^\/jobs$/, "jobs", jobs],
  [/^\/jobs\/(\d+)$/, "jobs", job],
];

let masterName = "TestFarm";
let current = null; // {cleanups, root}

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
  replace(box, item);
  if (kind !== "error") setTimeout(() => item.remove(), 8000);
  return item;
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
    input,
    h("button", { type: "submit" }, "Log in"),
  );
  replace(box, form);
}

// --- routing ---

function parseHash() {
  const raw = decodeURIComponent(location.hash.replace(/^#/, "")) || "/";
  const [path, qs] = raw.split("?");
  return { path, query: new URLSearchParams(qs || "") };
}

function navigate() {
  if (current) {
    for (const f of current.cleanups.reverse()) {
      try {
        f();
      } catch (e) {
        console.error(e);
      }
    }
  }
  const { path, query } = parseHash();
  const main = document.getElementById("main");
  const root = h("div", { class: "page" });
  replace(main, root);
  const cleanups = [];
  current = { cleanups, root };
  let found = null;
  for (const [re, nav, mod] of routes) {
    const m = re.exec(path);
    if (m) {
      found = { nav, mod, params: m.slice(1) };
      break;
    }
  }
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", !!found && a.dataset.nav === found.nav);
  }
  if (!found) {
    document.title = `Not found – ${masterName}`;
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
      document.title = `${t} – ${masterName}`;
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
      replace(root, h("h1", null, "Could not load this page"), h("p", { class: "error" }, e.message));
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
    masterName = m.name || masterName;
    document.getElementById("brand").textContent = masterName;
  } catch {
    /* the page shows its own error */
  }
}

start();
