// errors.js - which lines of a log are errors, for the log viewer's "first
// error" and "next error". Pure functions, no DOM: tests/browser/
// unit.test.mjs runs them under node.
//
// Patterns are plain substrings, like the master's mail error_patterns
// (docs/config.md), matched case-insensitively. A builder's own patterns
// are used when the API gives them (a builder's `error_patterns`); else
// DEFAULT_ERROR_PATTERNS, which know the usual toolchains: gcc and clang
// ("error:"), ninja ("FAILED", "build stopped"), make ("make: ***"),
// ctest ("***Failed"),
// sanitizers ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", UBSan's
// "runtime error:"), GoogleTest ("[  FAILED  ]"), pytest ("FAILED"),
// Python tracebacks, Go panics, crashes and the linker.

export const DEFAULT_ERROR_PATTERNS = [
  "error:",
  "FAILED",
  "***Failed",
  "ERROR: AddressSanitizer",
  "ERROR: LeakSanitizer",
  "runtime error:",
  "[  FAILED  ]",
  "Traceback (most recent call last)",
  "panic:",
  "Segmentation fault",
  "undefined reference",
  "fatal error",
  "make: ***",
  "ninja: build stopped",
];

// Counts that say nothing failed ("0 failed", "0 tests failed", "failed: 0",
// "errors: 0") are not errors, whatever the patterns say.
const ZERO = /\b0 (?:tests? )?failed\b|\bfailed:? 0\b|\berrors?:? 0\b/gi;

const MAX_PATTERNS = 100;
const MAX_PATTERN_LEN = 1024;

function escape(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// A function line -> bool for the given patterns (an array of strings;
// anything else, or an empty array, gives the defaults). Lines are tested
// without their newline.
export function errorMatcher(patterns) {
  let list = Array.isArray(patterns) ? patterns.filter((p) => typeof p === "string" && p.length > 0 && p.length <= MAX_PATTERN_LEN) : [];
  if (!list.length) list = DEFAULT_ERROR_PATTERNS;
  const re = new RegExp(list.slice(0, MAX_PATTERNS).map(escape).join("|"), "i");
  return (line) => {
    if (!re.test(line)) return false;
    ZERO.lastIndex = 0;
    if (!ZERO.test(line)) return true;
    return re.test(line.replace(ZERO, " "));
  };
}

// "L120" or "L120-L140" (also "L140-L120", "L120-140"): the lines [a, b]
// with a <= b, or null when s is not such a reference or names line 0.
export function parseLineRef(s) {
  const m = /^L(\d{1,9})(?:-L?(\d{1,9}))?$/.exec(String(s || ""));
  if (!m) return null;
  let a = Number(m[1]);
  let b = m[2] === undefined ? a : Number(m[2]);
  if (a < 1 || b < 1) return null;
  if (b < a) [a, b] = [b, a];
  return [a, b];
}

// The reference of lines [a, b]: "L120" or "L120-L140".
export function lineRef(a, b) {
  return a === b || b === undefined || b === null ? `L${a}` : `L${Math.min(a, b)}-L${Math.max(a, b)}`;
}
