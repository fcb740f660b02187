// follow.mjs - the build page of a build that runs on another master's
// slave (several masters on one database, docs/admins.md): the log of its
// running step grows on the page while the step runs. Not a run.mjs
// group: tests/integration/test_multimaster.py starts two masters on
// PostgreSQL and runs
//
//   node follow.mjs BASE BUILD STEP UPTO
//
// with BASE the master that does not run the build. The page is opened on
// #/builds/BUILD/steps/STEP and, once drawn, this prints "OPEN" (the
// test's step waits for it to print); every 50 ms it counts the lines "line N "
// the log view shows, until "line UPTO " is there, then asks BASE's API for
// the step's state. It prints one line "RESULT {seen: [[ms, lines], ...],
// step_state, problems}" for the Python side to judge: the count must grow
// in several steps while the step is still running (before, the page
// showed the output only once the step had ended).
import { launch, newPage, openPage, until } from "./lib.mjs";

const [base, build, step, upto] = process.argv.slice(2);
const browser = await launch();
let code = 0;
try {
  const page = await newPage(browser.context);
  await openPage(page, base, `/builds/${build}/steps/${step}`);
  console.log("OPEN"); // the test lets the step print now
  const t0 = Date.now();
  const seen = [];
  await until(
    `line ${upto} on the page`,
    async () => {
      const text = await page.evaluate(() => {
        const pre = document.querySelector(".logview pre.log");
        return pre ? pre.textContent : "";
      });
      const n = (text.match(/line \d+ /g) || []).length;
      if (!seen.length || seen[seen.length - 1][1] !== n) seen.push([Date.now() - t0, n]);
      return text.includes(`line ${upto} `);
    },
    { timeout: 30000, interval: 50 },
  );
  const r = await fetch(`${base}/api/v1/builds/${build}`);
  const b = await r.json();
  const st = (b.steps || []).find((s) => s.index === Number(step));
  console.log("RESULT " + JSON.stringify({ seen, step_state: st ? st.state : null, problems: page.problems }));
} catch (e) {
  console.log("RESULT " + JSON.stringify({ error: String(e) }));
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
