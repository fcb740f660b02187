// plot.js - uPlot charts of a builder's series (build duration, stats from
// steps) against the build number.
//
// uPlot comes from npm (web/package.json) and is copied into web/vendor/
// by `npm ci --prefix web` (tools/vendor.mjs), so the master serves it
// like every other page file; no CDN. It is loaded on first use only, so
// the other pages do not pay for it, and a missing copy turns into a
// message on the builder page instead of a broken page.
//
// Each axis is as wide as its widest tick label plus the tick and the gap
// (measured with the axis font), so tick labels never run into the axis
// title beside them. Clicking a point (within POINT_HIT px) opens its
// build; the pointer says so. Colours come from the page's CSS, so the
// charts follow the dark scheme too.

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

const POINT_HIT = 14;
const AXIS_FONT = '12px "DejaVu Sans", system-ui, sans-serif';
const LABEL_FONT = 'bold 12px "DejaVu Sans", system-ui, sans-serif';
const TICK = 10; // uPlot's tick length
const GAP = 5; // uPlot's gap between tick and label

let measurer = null;
function textWidth(text, font) {
  if (!measurer) measurer = document.createElement("canvas").getContext("2d");
  measurer.font = font;
  return measurer.measureText(text).width;
}

// The size of a vertical axis: its widest tick label, the tick, the gap
// and a little air before the axis title.
function ySize(u, values) {
  let w = 0;
  for (const v of values || []) if (v) w = Math.max(w, textWidth(String(v), AXIS_FONT));
  return Math.ceil(w) + TICK + GAP + 8;
}

function cssVar(name, fallback) {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
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
// labels. results (optional, per point) colour the points; ids (optional,
// per point) are the builds a click opens. Returns the uPlot instance
// (destroy() it when the page goes).
export async function drawPlot(container, { title, xs, ys, yLabel, results, fmt, ids }) {
  const UPlot = await loadUPlot();
  const width = Math.max(280, Math.min(900, container.clientWidth || 600));
  const fg = cssVar("--fg", "#1f2328");
  const line = cssVar("--line", "#d8dde3");
  const axis = (o) => ({
    stroke: fg,
    font: AXIS_FONT,
    labelFont: LABEL_FONT,
    labelSize: 20,
    labelGap: 0,
    grid: { stroke: line, width: 1 },
    ticks: { stroke: line, width: 1, size: TICK },
    gap: GAP,
    ...o,
  });
  const opts = {
    title,
    width,
    height: 220,
    scales: { x: { time: false } },
    axes: [
      axis({ label: "build number", size: 12 * 1.5 + TICK + GAP + 6, values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : "")) }),
      axis({ label: yLabel || "", size: ySize, values: (u, vals) => vals.map((v) => String(Number(v.toPrecision(4)))) }),
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
  const u = new UPlot(opts, [xs, ys], container);
  if (ids) {
    // The point nearest to the pointer (position in the plot area, CSS
    // px), if it is within POINT_HIT: its index, else null. Computed from
    // the event itself, not from uPlot's cursor, which may lag a frame.
    const near = (e) => {
      const box = u.over.getBoundingClientRect();
      const x = e.clientX - box.left;
      const y = e.clientY - box.top;
      let best = null;
      let bestD = POINT_HIT;
      for (let i = 0; i < xs.length; i++) {
        if (ys[i] === null || ys[i] === undefined || !ids[i]) continue;
        const d = Math.hypot(u.valToPos(xs[i], "x") - x, u.valToPos(ys[i], "y") - y);
        if (d <= bestD) {
          best = i;
          bestD = d;
        }
      }
      return best;
    };
    u.over.addEventListener("mousemove", (e) => {
      u.over.style.cursor = near(e) !== null ? "pointer" : "";
    });
    u.over.addEventListener("click", (e) => {
      const i = near(e);
      if (i !== null) location.hash = `#/builds/${ids[i]}`;
    });
  }
  return u;
}
