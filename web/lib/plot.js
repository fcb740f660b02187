// plot.js - uPlot charts of a builder's series (build duration, stats from
// steps) against the build number.
//
// uPlot comes from npm (web/package.json) and is copied into web/vendor/
// by `npm ci --prefix web` (tools/vendor.mjs), so the master serves it
// like every other page file; no CDN. It is loaded on first use only, so
// the other pages do not pay for it, and a missing copy turns into a
// message on the builder page instead of a broken page.

import { h } from "./dom.js";

let uplot = null;

function loadUPlot() {
  if (!uplot) {
    const css = h("link", { rel: "stylesheet", href: new URL("vendor/uPlot.min.css", document.baseURI).href });
    document.head.appendChild(css);
    uplot = import(new URL("vendor/uPlot.esm.js", document.baseURI).href).then((m) => m.default);
  }
  return uplot;
}

const RESULT_COLOURS = {
  SUCCESS: "#2e9e44",
  WARNINGS: "#e09a1a",
  FAILURE: "#d63a3a",
  EXCEPTION: "#9c3fc0",
  CANCELLED: "#7a8a99",
  RETRY: "#7a8a99",
  SKIPPED: "#bbbbbb",
};

// Draws one chart into container: xs (build numbers), ys (values), with
// labels. results (optional, per point) colour the points. Returns the
// uPlot instance (destroy() it when the page goes).
export async function drawPlot(container, { title, xs, ys, yLabel, results, fmt }) {
  const UPlot = await loadUPlot();
  const width = Math.max(320, Math.min(900, container.clientWidth || 600));
  const opts = {
    title,
    width,
    height: 220,
    scales: { x: { time: false } },
    axes: [
      { label: "build number", values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : "")) },
      { label: yLabel || "", size: 60, values: (u, vals) => vals.map((v) => String(Number(v.toPrecision(4)))) },
    ],
    series: [
      { label: "build", value: (u, v) => (v === null || v === undefined ? "" : `#${v}`) },
      {
        label: yLabel || title,
        stroke: "#3b6fb6",
        width: 1.5,
        value: (u, v) => (v === null || v === undefined ? "" : fmt ? fmt(v) : String(v)),
        points: {
          show: true,
          size: 7,
          fill: (u, seriesIdx) => "#3b6fb6",
        },
      },
    ],
    hooks: results
      ? {
          draw: [
            (u) => {
              // Colour each point by its build's result.
              const ctx = u.ctx;
              ctx.save();
              for (let i = 0; i < xs.length; i++) {
                if (ys[i] === null || ys[i] === undefined) continue;
                const x = u.valToPos(xs[i], "x", true);
                const y = u.valToPos(ys[i], "y", true);
                ctx.fillStyle = RESULT_COLOURS[results[i]] || "#3b6fb6";
                ctx.beginPath();
                ctx.arc(x, y, 4 * devicePixelRatio, 0, 2 * Math.PI);
                ctx.fill();
              }
              ctx.restore();
            },
          ],
        }
      : {},
  };
  return new UPlot(opts, [xs, ys], container);
}
