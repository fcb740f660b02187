// tools/vendor.mjs - copies the browser files of npm packages the pages use
// into web/vendor/, so that the pages load them from the master (no CDN)
// and a web_root holding only web/ (without node_modules) still works.
// Run by npm after `npm ci --prefix web` (the "postinstall" script).
import { copyFileSync, mkdirSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const web = join(dirname(fileURLToPath(import.meta.url)), "..");
const files = [
  ["node_modules/uplot/dist/uPlot.esm.js", "vendor/uPlot.esm.js"],
  ["node_modules/uplot/dist/uPlot.min.css", "vendor/uPlot.min.css"],
  ["node_modules/uplot/LICENSE", "vendor/uPlot.LICENSE"],
];
mkdirSync(join(web, "vendor"), { recursive: true });
for (const [from, to] of files) {
  const src = join(web, from);
  if (!existsSync(src)) {
    console.error(`vendor.mjs: ${from} is missing; run npm ci --prefix web`);
    process.exit(1);
  }
  copyFileSync(src, join(web, to));
}
console.log(`vendor.mjs: copied ${files.length} files into web/vendor/`);
