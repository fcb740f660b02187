// api.js - the pages' client of the master's JSON API (docs/api.md).
//
// Paths are relative ("api/v1/...") and resolved against the page, so the
// pages work wherever the master's web_root is mounted, also behind a
// reverse proxy that adds a prefix. The token of a logged-in user lives in
// localStorage under "tf-token" and goes out as "Authorization: Bearer" on
// actions only: reading needs no token.

import { health } from "./health.js";

const TOKEN_KEY = "tf-token";
const USER_KEY = "tf-user";

export const auth = {
  token() {
    try {
      return localStorage.getItem(TOKEN_KEY) || "";
    } catch {
      return "";
    }
  },
  user() {
    try {
      return JSON.parse(localStorage.getItem(USER_KEY) || "null");
    } catch {
      return null;
    }
  },
  set(token, user) {
    localStorage.setItem(TOKEN_KEY, token);
    localStorage.setItem(USER_KEY, JSON.stringify(user || null));
    window.dispatchEvent(new Event("tf-auth"));
  },
  clear() {
    localStorage.removeItem(TOKEN_KEY);
    localStorage.removeItem(USER_KEY);
    window.dispatchEvent(new Event("tf-auth"));
  },
};

// Tells health.js what a fetch came to: an answer from the master, or
// none (a network error, or a proxy's 502/504 for a master behind it).
function seen(resp) {
  if (resp.status === 502 || resp.status === 504) health.failed();
  else health.ok();
  return resp;
}

function unreachable(e) {
  health.failed();
  return new ApiError(0, `cannot reach the master (${e.message})`);
}

// An answer other than 2xx: status and the API's own message.
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function apiUrl(path) {
  return new URL(`api/v1${path}`, document.baseURI).href;
}

async function errorOf(resp) {
  let msg = `${resp.status} ${resp.statusText || "error"}`;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) msg = body.error.message;
  } catch {
    /* not JSON */
  }
  return new ApiError(resp.status, msg);
}

// GET api/v1+path; resolves to the parsed JSON, rejects with ApiError.
// params: an object of query parameters (arrays repeat the key); token:
// true sends the stored token, a string sends that one.
export async function get(path, params, { token = false, signal } = {}) {
  const url = new URL(apiUrl(path));
  for (const [k, v] of Object.entries(params || {})) {
    if (v === null || v === undefined || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) url.searchParams.append(k, one);
  }
  const headers = {};
  const t = typeof token === "string" ? token : token ? auth.token() : "";
  if (t) headers.Authorization = `Bearer ${t}`;
  let resp;
  try {
    resp = seen(await fetch(url, { headers, signal, cache: "no-store" }));
    // A hot answer served while its next rendering is due (docs/api.md,
    // "cached answers"): at most 100 ms old, and the event that made it
    // stale may be the last one for a while, so ask again once.
    if (resp.ok && resp.headers.get("x-tf-stale")) {
      await new Promise((done) => setTimeout(done, 150));
      resp = seen(await fetch(url, { headers, signal, cache: "no-store" }));
    }
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw unreachable(e);
  }
  if (!resp.ok) throw await errorOf(resp);
  return resp.json();
}

// POST api/v1+path with a JSON body and the stored token (if any: without
// one the master answers 401 and the caller shows its message).
export async function post(path, body) {
  const headers = { "Content-Type": "application/json" };
  if (auth.token()) headers.Authorization = `Bearer ${auth.token()}`;
  let resp;
  try {
    resp = seen(
      await fetch(apiUrl(path), {
        method: "POST",
        headers,
        body: JSON.stringify(body || {}),
        cache: "no-store",
      }),
    );
  } catch (e) {
    throw unreachable(e);
  }
  if (!resp.ok) throw await errorOf(resp);
  const text = await resp.text();
  return text ? JSON.parse(text) : {};
}

// GET of raw bytes with a Range header: resolves to {bytes (Uint8Array),
// start, end (exclusive), size (the whole log's size so far), lines (the
// newlines in those size bytes, or null)}.
// range is "bytes=A-B" or "bytes=-N".
export async function getRange(path, range, { signal } = {}) {
  let resp;
  try {
    resp = seen(await fetch(apiUrl(path), { headers: { Range: range }, signal, cache: "no-store" }));
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw unreachable(e);
  }
  if (!resp.ok) throw await errorOf(resp);
  const bytes = new Uint8Array(await resp.arrayBuffer());
  let start = 0;
  let size = Number(resp.headers.get("X-Log-Size"));
  // Newlines in the whole log (X-Log-Lines), or null when not sent.
  const linesHdr = resp.headers.get("X-Log-Lines");
  const lines = linesHdr === null || linesHdr === "" ? null : Number(linesHdr);
  const cr = /bytes (\d+)-(\d+)\/(\d+)/.exec(resp.headers.get("Content-Range") || "");
  if (cr) {
    start = Number(cr[1]);
    size = Number(cr[3]);
  }
  if (!Number.isFinite(size)) size = start + bytes.length;
  return { bytes, start, end: start + bytes.length, size, lines: Number.isFinite(lines) ? lines : null };
}

// The endpoints the master says it has (GET /api/v1 "endpoints"), fetched
// once: pages use it to leave out what an older master cannot do instead
// of provoking 404s.
let index = null;
export function endpoints() {
  if (!index) {
    index = get("").then(
      (d) => new Set(d.endpoints || []),
      () => new Set(),
    );
  }
  return index;
}
