// unit.test.mjs - the status pages' pure modules under node's test runner
// (node --test tests/browser/unit.test.mjs): the ANSI parser and the
// formatting helpers. No browser needed; tests/integration/test_browser.py
// runs it as part of the suite.
import assert from "node:assert/strict";
import { test } from "node:test";
import { ansiEnd, ansiFeed, colour256, createAnsiState, styleToCss } from "../../web/lib/ansi.js";
import { DEFAULT_ERROR_PATTERNS, errorMatcher, lineRef, parseLineRef } from "../../web/lib/errors.js";
import { fmtAgo, fmtBytes, fmtDuration, fmtInt, resultClass, resultText, verdictText } from "../../web/lib/format.js";

const feed = (...chunks) => {
  const st = createAnsiState();
  const out = [];
  for (const c of chunks) out.push(...ansiFeed(st, c));
  out.push(...ansiEnd(st));
  // Merge neighbours with the same style, as the renderer would show them.
  const merged = [];
  for (const s of out) {
    const last = merged[merged.length - 1];
    if (last && JSON.stringify(last.style) === JSON.stringify(s.style)) last.text += s.text;
    else merged.push({ text: s.text, style: s.style ? { ...s.style } : null });
  }
  return merged;
};

test("plain text is one unstyled segment", () => {
  assert.deepEqual(feed("hello <b>world</b>\n"), [{ text: "hello <b>world</b>\n", style: null }]);
});

test("foreground colours, bold and reset", () => {
  const segs = feed("\x1b[31mred\x1b[0m plain \x1b[1;32mbold green\x1b[0m");
  assert.equal(segs.length, 3);
  assert.equal(segs[0].text, "red");
  assert.equal(segs[0].style.fg, 1);
  assert.equal(segs[1].style, null);
  assert.equal(segs[2].style.fg, 2);
  assert.equal(segs[2].style.bold, true);
  assert.deepEqual(styleToCss(segs[2].style).classes, ["fg2", "ansi-bold"]);
});

test("bright colours, backgrounds and default resets", () => {
  const segs = feed("\x1b[94mb\x1b[39m\x1b[41mr\x1b[49mx\x1b[103my");
  assert.equal(segs[0].style.fg, 12);
  assert.equal(segs[1].style.bg, 1);
  assert.equal(segs[2].style, null);
  assert.equal(segs[3].style.bg, 11);
  assert.deepEqual(styleToCss(segs[0].style).classes, ["fg12"]);
});

test("256 colours and true colour", () => {
  const segs = feed("\x1b[38;5;208mo\x1b[0m\x1b[38;2;10;20;30mt\x1b[48;5;4mb");
  assert.equal(styleToCss(segs[0].style).color, "rgb(255, 135, 0)");
  assert.equal(styleToCss(segs[1].style).color, "rgb(10, 20, 30)");
  assert.deepEqual(styleToCss(segs[2].style).classes, ["bg4"]);
  assert.equal(colour256(232), "rgb(8, 8, 8)");
  assert.equal(colour256(16), "rgb(0, 0, 0)");
  assert.equal(colour256(231), "rgb(255, 255, 255)");
});

test("a sequence split across chunks renders as if whole", () => {
  const whole = feed("a\x1b[1;31mred\x1b[0mb");
  for (let cut = 1; cut < 14; cut++) {
    const s = "a\x1b[1;31mred\x1b[0mb";
    assert.deepEqual(feed(s.slice(0, cut), s.slice(cut)), whole, `cut at ${cut}`);
  }
});

test("other escapes vanish: erase line, cursor, OSC title, charset", () => {
  const segs = feed("\x1b[2Kx\x1b[10;5Hy\x1b]0;title\x07z\x1b(Bw\x1b]8;;http://x\x1b\\link");
  assert.deepEqual(segs, [{ text: "xyzwlink", style: null }]);
});

test("an unfinished escape at the end is flushed as text without ESC", () => {
  const st = createAnsiState();
  assert.deepEqual(ansiFeed(st, "ab\x1b["), [{ text: "ab", style: null }]);
  assert.deepEqual(ansiEnd(st), [{ text: "[", style: null }]);
});

test("inverse swaps colours", () => {
  const [seg] = feed("\x1b[7;31mx");
  const css = styleToCss(seg.style);
  assert.ok(css.classes.includes("bg1"));
  assert.ok(css.classes.includes("ansi-inv-fg"));
});

test("formatting", () => {
  assert.equal(fmtDuration(850), "850 ms");
  assert.equal(fmtDuration(4200), "4.2 s");
  assert.equal(fmtDuration(184000), "3 min 04 s");
  assert.equal(fmtDuration(2 * 3600e3 + 5 * 60e3), "2 h 05 min");
  assert.equal(fmtBytes(1536), "1.5 KiB");
  assert.equal(fmtBytes(200 * 1024 * 1024), "200 MiB");
  assert.equal(fmtInt(209715212), "209,715,212");
  assert.equal(fmtAgo(1000, 1000 + 3 * 60e3), "3 min ago");
  assert.equal(resultClass("FAILURE", "finished"), "r-failure");
  assert.equal(resultClass(null, "running"), "r-running");
  assert.equal(resultClass(null, "pending"), "r-pending");
  assert.equal(resultText(null, "starting"), "starting");
  assert.equal(verdictText("failing"), "Some builders are failing");
});

test("error lines: the default patterns, case-insensitively", () => {
  const isErr = errorMatcher(null);
  for (const line of [
    "src/a.c:12:5: error: expected ';' before 'return'",
    "src/a.c:12:5: Error: something",
    "FAILED: build.ninja",
    "make: *** [Makefile:12: all] Error 2",
    "  3/5 Test  #3: parser ...........***Failed    0.02 sec",
    "==4242==ERROR: AddressSanitizer: heap-use-after-free on address 0x6020",
    "==4242==ERROR: LeakSanitizer: detected memory leaks",
    "src/a.c:3:7: runtime error: signed integer overflow",
    "[  FAILED  ] ParserTest.HandlesEmptyInput (3 ms)",
    "FAILED tests/test_io.py::test_roundtrip - AssertionError",
    "=== 1 failed, 2 passed in 0.1s ===",
  ]) {
    assert.equal(isErr(line), true, line);
  }
  for (const line of ["compiling foo.c", "100% tests passed, 0 tests failed out of 5", "[  PASSED  ] 5 tests.", "errors: 0", ""]) {
    assert.equal(isErr(line), false, line);
  }
  assert.ok(DEFAULT_ERROR_PATTERNS.includes("error:"));
});

test("error lines: a builder's own patterns replace the defaults", () => {
  const isErr = errorMatcher(["BROKEN ("]);
  assert.equal(isErr("it is broken (again)"), true);
  assert.equal(isErr("src/a.c:1: error: x"), false);
  // Nothing usable: the defaults.
  assert.equal(errorMatcher([])("error: x"), true);
  assert.equal(errorMatcher(["", 42])("error: x"), true);
});

test("line references", () => {
  assert.deepEqual(parseLineRef("L120"), [120, 120]);
  assert.deepEqual(parseLineRef("L120-L140"), [120, 140]);
  assert.deepEqual(parseLineRef("L140-L120"), [120, 140]);
  assert.deepEqual(parseLineRef("L120-140"), [120, 140]);
  for (const bad of ["", "120", "L0", "L-3", "Lx", "L1-L0", "L1234567890"]) assert.equal(parseLineRef(bad), null, bad);
  assert.equal(lineRef(7, 7), "L7");
  assert.equal(lineRef(140, 120), "L120-L140");
});
