// tests_page.mjs - the browser test of a build's failing tests (issue
// 12): on the page of a build whose ctest had a failing assertion and a
// flaky test, the failing tests come before the steps and the log, each
// with its name, its message and its own log lines (the assertion line);
// the flaky one is listed apart; the link on a test opens the log viewer
// on that test's lines; the page passes axe-core. run.mjs registers this
// group as "tests".
import { DESKTOP, axeViolations, newPage, openPage, shot } from "./lib.mjs";

export async function groupTests(r, ctx, S) {
  const page = await newPage(ctx);
  await page.setViewportSize(DESKTOP);
  const T = S.ctests;
  await openPage(page, S.base, `/builds/${T.build}`);
  await page.waitForSelector("#failing-tests", { timeout: 10000 });

  const title = await page.locator("#failing-tests h2").innerText();
  r.check("tests: the heading counts 1 failing test and 1 flaky", title.startsWith("1 failing test, 1 flaky"), title);
  const items = await page.evaluate(() =>
    [...document.querySelectorAll("#failing-tests li.test")].map((li) => ({
      name: li.dataset.test,
      status: li.dataset.status,
      message: (li.querySelector(".test-message") || {}).textContent || "",
      lines: (li.querySelector(".test-lines") || {}).textContent || "",
    })),
  );
  r.check("tests: test_pack first, then the flaky test_flaky", JSON.stringify(items.map((x) => [x.name, x.status])) === JSON.stringify([["test_pack", "fail"], ["test_flaky", "flaky"]]), JSON.stringify(items));
  const pack = items[0] || {};
  r.check("tests: test_pack's message names the assertion", (pack.message || "").includes("test_pack.c:89: json_pack integer failed"), pack.message);
  r.check("tests: test_pack's own log lines hold the assertion line", (pack.lines || "").includes("test_pack.c:89: json_pack integer failed") && (pack.lines || "").includes("Test #1: test_pack"), pack.lines);
  r.check("tests: passing tests are not listed", !items.some((x) => x.name === "test_ok"));

  // Before the steps and the log: the author sees the tests first.
  const order = await page.evaluate(() => {
    const t = document.querySelector("#failing-tests").getBoundingClientRect();
    const steps = document.querySelector("#steps-panel").getBoundingClientRect();
    const log = document.querySelector("#logbox").getBoundingClientRect();
    return { tests: t.top, steps: steps.top, log: log.top, testsOnScreen: t.top < window.innerHeight };
  });
  r.check("tests: the failing tests come before the steps and the log", order.tests < order.steps && order.tests < order.log && order.testsOnScreen, JSON.stringify(order));

  // The link on the test opens the viewer on its lines.
  await page.click("#failing-tests li[data-test=test_pack] .test-log-link");
  await page.waitForFunction(() => /\/steps\/\d+\/L\d+/.test(location.hash) && document.querySelector(".logview[data-selected]"), null, { timeout: 10000 });
  const sel = await page.evaluate(() => [...document.querySelectorAll("pre.log .ll.sel")].map((x) => x.textContent).join("\n"));
  r.check("tests: the test's link highlights its lines in the log, the assertion among them", sel.includes("test_pack.c:89: json_pack integer failed"), sel.slice(0, 400));
  r.check(`tests: the address names the ctest step (${T.step})`, (await page.evaluate(() => location.hash)).startsWith(`#/builds/${T.build}/steps/${T.step}/L`), await page.evaluate(() => location.hash));

  const v = await axeViolations(page, { exclude: ["pre.log"] });
  r.check("tests: no serious or critical accessibility violations", v.length === 0, v.join("\n"));
  await shot(page, S, "build-failing-tests", r);
  r.noProblems(page, "tests");
}
