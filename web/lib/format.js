// format.js - pure functions from data to display strings and CSS classes.
// No DOM here, so tests/browser/unit.test.mjs runs them under node.

// The master's clock minus ours, learned from answers that carry time_ms;
// elapsed times are computed on the master's clock so a skewed browser
// clock does not show negative durations.
let skew = 0;
export function learnServerTime(serverMs) {
  if (Number.isFinite(serverMs)) skew = serverMs - Date.now();
}
export function serverNow() {
  return Date.now() + skew;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

// "2026-11-22 05:31:07" in the browser's time zone, or "" for null.
export function fmtTime(ms) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

// "05:31:07" (today) or a full time.
export function fmtShortTime(ms, now = serverNow()) {
  if (ms === null || ms === undefined) return "";
  const full = fmtTime(ms);
  return full.slice(0, 10) === fmtTime(now).slice(0, 10) ? full.slice(11) : full;
}

// A duration: "850 ms", "4.2 s", "3 min 04 s", "2 h 05 min", "3 d 4 h".
export function fmtDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "";
  if (ms < 0) ms = 0;
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 10) return `${s.toFixed(1)} s`;
  if (s < 60) return `${Math.floor(s)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${pad(Math.floor(s % 60))} s`;
  const hrs = Math.floor(m / 60);
  if (hrs < 48) return `${hrs} h ${pad(m % 60)} min`;
  return `${Math.floor(hrs / 24)} d ${hrs % 24} h`;
}

// "just now", "5 s ago", "3 min ago", "2 h ago", "4 d ago".
export function fmtAgo(ms, now = serverNow()) {
  if (ms === null || ms === undefined) return "";
  const s = Math.max(0, (now - ms) / 1000);
  if (s < 2) return "just now";
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 172800) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// 1536 -> "1.5 KiB".
export function fmtBytes(n) {
  if (n === null || n === undefined) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

// 1234567 -> "1,234,567".
export function fmtInt(n) {
  if (n === null || n === undefined) return "";
  return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

export const RESULTS = ["SUCCESS", "WARNINGS", "FAILURE", "SKIPPED", "EXCEPTION", "RETRY", "CANCELLED"];

// The CSS class colouring a build, step or request: by result once there
// is one, else by state ("running" animates, "pending" is pale).
export function resultClass(result, state) {
  if (result && RESULTS.includes(result)) return `r-${result.toLowerCase()}`;
  if (state === "running" || state === "starting" || state === "building") return "r-running";
  if (state === "cancelled") return "r-cancelled";
  return "r-pending";
}

// What a build or step box says: its result, else its state.
export function resultText(result, state) {
  if (result) return result.toLowerCase();
  return state || "pending";
}

// The project-wide verdict of GET /api/v1/summary as a sentence.
export function verdictText(verdict) {
  switch (verdict) {
    case "ok":
      return "All builders pass";
    case "warnings":
      return "Some builders have warnings";
    case "failing":
      return "Some builders are failing";
    default:
      return "No build has finished yet";
  }
}
