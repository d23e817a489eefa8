// Small SVG charts drawn in the page, with no dependency: a line chart and a heatmap.
//
//   import { lineChart, heatmap } from "./plot.js";
//   lineChart(el, { series: [{ name: "loss", points: [[0, 0.69], [100, 0.41]] }],
//                   xLabel: "step", yLabel: "loss", yMin: 0 });
//   heatmap(el, { labels: ["a", "b"], matrix: [[null, 0.8], [0.8, null]], min: -1, max: 1 });
//
// Both replace the container's content and redraw when its width changes. They work under
// a strict CSP: no inline style attributes (positions are set through the CSSOM), no eval,
// no external assets. Accessibility: the SVG is role="img" with a <title> and <desc>; every
// point (up to POINT_LIMIT) and every heatmap cell is focusable and shows its value in a
// tooltip on hover or focus; a "Data" disclosure below the chart holds the numbers as a
// table. Colours are the Okabe–Ito palette (distinguishable with common colour blindness)
// and every series also has its own marker shape.

const SVG = "http://www.w3.org/2000/svg";
// Okabe & Ito (2008), darkened where needed for 3:1 contrast against white.
export const PALETTE = ["#0072b2", "#d55e00", "#009e73", "#cc79a7", "#8a6d00", "#56b4e9", "#000000", "#b5446e"];
const MARKERS = ["circle", "square", "diamond", "triangle"];
const POINT_LIMIT = 400; // more points than this: no per-point focus targets, a crosshair instead
const FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif";
let uid = 0;

function svgEl(name, attrs = {}, parent = null) {
  const el = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  if (parent) parent.appendChild(el);
  return el;
}

function htmlEl(name, attrs = {}, parent = null, text = null) {
  const el = document.createElement(name);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  if (text !== null) el.textContent = text;
  if (parent) parent.appendChild(el);
  return el;
}

function finite(v) {
  return typeof v === "number" && Number.isFinite(v);
}

// "Nice" tick values covering [lo, hi] (Heckbert's loose labelling, 1-2-5 steps).
export function niceTicks(lo, hi, count = 5) {
  if (!finite(lo) || !finite(hi)) return [];
  if (lo === hi) {
    const pad = Math.abs(lo) > 0 ? Math.abs(lo) * 0.1 : 1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / Math.max(count, 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  const step = (norm >= 5 ? 10 : norm >= 2 ? 5 : norm >= 1 ? 2 : 1) * mag;
  const start = Math.ceil(lo / step - 1e-9) * step;
  const ticks = [];
  for (let v = start; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return ticks;
}

function defaultFormat(v) {
  if (!finite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  if (Number.isInteger(v)) return v.toLocaleString("en");
  return String(Number(v.toPrecision(4)));
}

function dateFormat(v) {
  const d = new Date(v);
  return Number.isNaN(d.getTime()) ? "–" : d.toISOString().slice(0, 10);
}

function tooltipFor(container) {
  const tip = htmlEl("div", { role: "status", "aria-live": "polite", class: "plot-tooltip" });
  const s = tip.style;
  s.position = "absolute";
  s.pointerEvents = "none";
  s.background = "#1b1f24";
  s.color = "#ffffff";
  s.font = `13px/1.35 ${FONT}`;
  s.padding = "4px 8px";
  s.borderRadius = "4px";
  s.whiteSpace = "pre";
  s.zIndex = "10";
  s.display = "none";
  container.appendChild(tip);
  return {
    show(text, x, y) {
      tip.textContent = text;
      s.display = "block";
      const width = container.clientWidth;
      const box = tip.getBoundingClientRect();
      s.left = `${Math.max(0, Math.min(x + 12, width - box.width - 2))}px`;
      s.top = `${Math.max(0, y - box.height - 10)}px`;
    },
    hide() {
      s.display = "none";
    },
  };
}

function prepare(container) {
  container.replaceChildren();
  if (getComputedStyle(container).position === "static") container.style.position = "relative";
}

function watchWidth(container, draw) {
  // One observer per container: a chart drawn again into it replaces the previous one.
  if (container.__plotObserver) container.__plotObserver.disconnect();
  let last = container.clientWidth;
  if (typeof ResizeObserver === "undefined") return;
  const observer = new ResizeObserver(() => {
    const now = container.clientWidth;
    if (Math.abs(now - last) >= 2) {
      last = now;
      draw();
    }
  });
  observer.observe(container);
  container.__plotObserver = observer;
}

function marker(parent, shape, x, y, r, color, attrs = {}) {
  let el;
  if (shape === "square") {
    el = svgEl("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, ...attrs }, parent);
  } else if (shape === "diamond") {
    el = svgEl("path", { d: `M${x},${y - r * 1.3}L${x + r * 1.3},${y}L${x},${y + r * 1.3}L${x - r * 1.3},${y}Z`, ...attrs }, parent);
  } else if (shape === "triangle") {
    el = svgEl("path", { d: `M${x},${y - r * 1.3}L${x + r * 1.2},${y + r}L${x - r * 1.2},${y + r}Z`, ...attrs }, parent);
  } else {
    el = svgEl("circle", { cx: x, cy: y, r, ...attrs }, parent);
  }
  el.setAttribute("fill", color);
  el.setAttribute("stroke", "#ffffff");
  el.setAttribute("stroke-width", "1");
  return el;
}

function dataTable(parent, caption, header, rows) {
  const details = htmlEl("details", { class: "plot-data" }, parent);
  htmlEl("summary", {}, details, "Data");
  const table = htmlEl("table", { class: "grid" }, details);
  htmlEl("caption", { class: "visually-hidden" }, table, caption);
  const head = htmlEl("tr", {}, htmlEl("thead", {}, table));
  for (const h of header) htmlEl("th", { scope: "col" }, head, h);
  const body = htmlEl("tbody", {}, table);
  for (const row of rows) {
    const tr = htmlEl("tr", {}, body);
    row.forEach((cell, i) => htmlEl(i === 0 ? "th" : "td", i === 0 ? { scope: "row" } : {}, tr, cell));
  }
  return details;
}

/**
 * A line chart of one or more series.
 *
 * options: series [{name, points: [[x, y], ...], color?, dashed?, line?, labels?}] (y null/NaN
 * leaves a gap; line false draws the markers only, a scatter; labels, one text per point, are
 * written beside the markers and in their tooltips, and make the data table one row per point),
 * xLabel, yLabel, yMin, yMax, xMin, xMax (fixed ends; otherwise from the data),
 * title (a heading for screen readers and the SVG title), description, height (px, 280),
 * xType "number" | "time" (x in ms since the epoch; ticks on whole UTC days, labels as UTC
 * dates), xFormat / yFormat (value -> text),
 * highlight {x, y, label} (one point drawn as a ring), legend (default true when >1 series),
 * overlap (draw earlier series wider, for curves that often coincide), table (default true),
 * xIntegers / yIntegers (ticks on whole numbers only: counts, steps), emptyText (what an empty
 * chart says; "No data yet").
 */
export function lineChart(container, options) {
  const opts = { height: 280, xType: "number", ...options };
  const series = (opts.series || []).map((s, i) => {
    // Labels travel with their points through the filter.
    const kept = (s.points || [])
      .map((p, k) => [p, Array.isArray(s.labels) ? s.labels[k] : null])
      .filter(([p]) => Array.isArray(p) && finite(p[0]));
    return {
      name: String(s.name ?? `series ${i + 1}`),
      color: s.color || PALETTE[i % PALETTE.length],
      shape: MARKERS[i % MARKERS.length],
      dashed: Boolean(s.dashed),
      line: s.line !== false,
      points: kept.map(([p]) => [p[0], finite(p[1]) ? p[1] : null]),
      labels: Array.isArray(s.labels) ? kept.map(([, l]) => (l === null || l === undefined ? "" : String(l))) : null,
    };
  });
  const labelled = series.some((s) => s.labels);
  const xFormat = opts.xFormat || (opts.xType === "time" ? dateFormat : defaultFormat);
  const yFormat = opts.yFormat || defaultFormat;
  const id = `plot${++uid}`;

  function draw() {
    prepare(container);
    const width = Math.max(container.clientWidth || 0, 240);
    const height = opts.height;
    const showLegend = opts.legend ?? series.length > 1;
    const margin = { top: 16, right: 18, bottom: 46, left: 62 };
    const plotW = width - margin.left - margin.right;
    const plotH = height - margin.top - margin.bottom;

    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = series.flatMap((s) => s.points.map((p) => p[1]).filter(finite));
    // Loops, not Math.min(...xs): a long training curve would overflow the argument list.
    const lowest = (values) => values.reduce((m, v) => (v < m ? v : m), Infinity);
    const highest = (values) => values.reduce((m, v) => (v > m ? v : m), -Infinity);
    let xMin = finite(opts.xMin) ? opts.xMin : lowest(xs);
    let xMax = finite(opts.xMax) ? opts.xMax : highest(xs);
    let yMin = finite(opts.yMin) ? opts.yMin : lowest(ys);
    let yMax = finite(opts.yMax) ? opts.yMax : highest(ys);
    const empty = xs.length === 0 || ys.length === 0;
    if (empty) {
      xMin = 0; xMax = 1;
      yMin = finite(opts.yMin) ? opts.yMin : 0;
      yMax = finite(opts.yMax) ? opts.yMax : 1;
    }
    if (xMin === xMax) { xMin -= 1; xMax += 1; }
    if (yMin === yMax) { const pad = Math.abs(yMin) * 0.05 || 0.5; yMin -= pad; yMax += pad; }
    const sx = (x) => margin.left + ((x - xMin) / (xMax - xMin)) * plotW;
    const sy = (y) => margin.top + (1 - (y - yMin) / (yMax - yMin)) * plotH;

    const svg = svgEl("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-labelledby": `${id}-title ${id}-desc`, "font-family": FONT, class: "plot plot-line",
    }, container);
    svgEl("title", { id: `${id}-title` }, svg).textContent = opts.title || `${opts.yLabel || "y"} by ${opts.xLabel || "x"}`;
    const summary = series.map((s) => {
      const last = [...s.points].reverse().find((p) => p[1] !== null);
      return last ? `${s.name}: ${yFormat(last[1])} at ${xFormat(last[0])}` : `${s.name}: no value`;
    }).join("; ");
    svgEl("desc", { id: `${id}-desc` }, svg).textContent =
      (opts.description ? `${opts.description} ` : "") + (empty ? `${opts.emptyText || "No data yet"}.` : `Last values: ${summary}.`);

    // Grid and axes.
    const axes = svgEl("g", { "font-size": 12, fill: "#3d444d" }, svg);
    const yTicks = niceTicks(yMin, yMax, Math.max(2, Math.round(plotH / 48)))
      .filter((t) => t >= yMin - 1e-12 && t <= yMax + 1e-12)
      .filter((t) => !opts.yIntegers || Number.isInteger(t));
    for (const t of yTicks) {
      svgEl("line", { x1: margin.left, x2: margin.left + plotW, y1: sy(t), y2: sy(t), stroke: "#d8dee4", "stroke-width": 1 }, axes);
      svgEl("text", { x: margin.left - 8, y: sy(t), "text-anchor": "end", "dominant-baseline": "middle" }, axes).textContent = yFormat(t);
    }
    let xTicks;
    if (opts.xType === "time") {
      // Whole UTC days, at a step of 1, 2, 7, 14, 28 ... days that leaves room for each label.
      const day = 86_400_000;
      const room = Math.max(2, Math.floor(plotW / 95));
      let step = 1;
      for (const candidate of [1, 2, 7, 14, 28, 56, 91, 182, 364, 728]) {
        step = candidate;
        if ((xMax - xMin) / (candidate * day) <= room) break;
      }
      xTicks = [];
      for (let t = Math.ceil(xMin / (step * day)) * step * day; t <= xMax + 1; t += step * day) xTicks.push(t);
      if (xTicks.length === 0) xTicks = [xMin];
    } else {
      xTicks = niceTicks(xMin, xMax, Math.max(2, Math.round(plotW / 90)))
        .filter((t) => t >= xMin - 1e-12 && t <= xMax + 1e-12)
        .filter((t) => !opts.xIntegers || Number.isInteger(t));
    }
    if (empty) xTicks = []; // no data, no scale to read
    for (const t of xTicks) {
      svgEl("line", { x1: sx(t), x2: sx(t), y1: margin.top + plotH, y2: margin.top + plotH + 5, stroke: "#57606a" }, axes);
      // The outermost labels stay inside the chart.
      const anchor = sx(t) > width - 40 ? "end" : sx(t) < margin.left + 20 && t !== xTicks[0] ? "start" : "middle";
      svgEl("text", { x: sx(t), y: margin.top + plotH + 18, "text-anchor": anchor }, axes).textContent = xFormat(t);
    }
    svgEl("line", { x1: margin.left, x2: margin.left + plotW, y1: margin.top + plotH, y2: margin.top + plotH, stroke: "#57606a" }, axes);
    svgEl("line", { x1: margin.left, x2: margin.left, y1: margin.top, y2: margin.top + plotH, stroke: "#57606a" }, axes);
    if (opts.xLabel) {
      svgEl("text", { x: margin.left + plotW / 2, y: height - 8, "text-anchor": "middle", "font-size": 13, "font-weight": 600, fill: "#1b1f24" }, svg).textContent = opts.xLabel;
    }
    if (opts.yLabel) {
      svgEl("text", {
        x: -(margin.top + plotH / 2), y: 15, transform: "rotate(-90)", "text-anchor": "middle",
        "font-size": 13, "font-weight": 600, fill: "#1b1f24",
      }, svg).textContent = opts.yLabel;
    }
    if (empty) {
      svgEl("text", { x: margin.left + plotW / 2, y: margin.top + plotH / 2, "text-anchor": "middle", fill: "#57606a", class: "plot-empty" }, svg).textContent = opts.emptyText || "No data yet";
    }

    const tip = tooltipFor(container);
    const totalPoints = series.reduce((n, s) => n + s.points.length, 0);
    const focusable = totalPoints <= POINT_LIMIT;
    const label = (s, p, k) =>
      `${s.labels && s.labels[k] ? `${s.labels[k]}\n` : ""}${s.name}\n${opts.xLabel || "x"}: ${xFormat(p[0])}\n${opts.yLabel || "y"}: ${yFormat(p[1])}`;

    series.forEach((s, index) => {
      const g = svgEl("g", { class: "plot-series", "data-series": s.name }, svg);
      // With ``overlap`` the earlier series are drawn wider, so a line that coincides
      // with a later one still shows around it.
      const strokeWidth = opts.overlap ? 2.25 + (series.length - 1 - index) * 2.5 : 2.25;
      let d = "";
      let pen = false;
      for (const [x, y] of s.points) {
        if (y === null) { pen = false; continue; }
        d += `${pen ? "L" : "M"}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        pen = true;
      }
      if (d && s.line) {
        svgEl("path", {
          d, class: "plot-path", fill: "none", stroke: s.color, "stroke-width": strokeWidth, "stroke-linejoin": "round",
          "stroke-dasharray": s.dashed ? "6 4" : null,
        }, g);
      }
      if (!focusable && s.line) return;
      s.points.forEach((p, k) => {
        if (p[1] === null) return;
        const x = sx(p[0]);
        const y = sy(p[1]);
        if (!focusable) {
          marker(g, s.shape, x, y, 3.5, s.color, { class: "plot-point" });
          return;
        }
        const m = marker(g, s.shape, x, y, s.line ? 3.5 : 5, s.color, { tabindex: 0, role: "img", "aria-label": label(s, p, k).replaceAll("\n", ", "), class: "plot-point" });
        const show = () => tip.show(label(s, p, k), x, y);
        m.addEventListener("mouseenter", show);
        m.addEventListener("focus", show);
        m.addEventListener("mouseleave", tip.hide);
        m.addEventListener("blur", tip.hide);
        if (s.labels && s.labels[k]) {
          const right = x > margin.left + plotW * 0.8;
          svgEl("text", {
            x: x + (right ? -9 : 9), y: y - 8, "text-anchor": right ? "end" : "start", class: "plot-label",
            "font-size": 12, fill: "#1b1f24", stroke: "#ffffff", "stroke-width": 3, "paint-order": "stroke", "pointer-events": "none",
          }, g).textContent = s.labels[k];
        }
      });
    });

    if (opts.highlight && finite(opts.highlight.x) && finite(opts.highlight.y)) {
      const h = opts.highlight;
      svgEl("circle", { cx: sx(h.x), cy: sy(h.y), r: 7, fill: "none", stroke: "#1b1f24", "stroke-width": 2.5, class: "plot-highlight" }, svg);
      if (h.label) {
        const right = sx(h.x) > margin.left + plotW * 0.7;
        // Above the ring, unless that would cut it off at the top of the chart: then below it.
        const below = sy(h.y) - 10 - 12 < 0;
        svgEl("text", {
          x: sx(h.x) + (right ? -11 : 11), y: sy(h.y) + (below ? 22 : -10), "text-anchor": right ? "end" : "start", class: "plot-highlight-label",
          "font-size": 12, "font-weight": 700, fill: "#1b1f24", stroke: "#ffffff", "stroke-width": 3, "paint-order": "stroke",
        }, svg).textContent = h.label;
      }
    }

    if (!focusable && !empty) {
      // Many points: a crosshair with the nearest value of each series.
      const overlay = svgEl("rect", { x: margin.left, y: margin.top, width: plotW, height: plotH, fill: "transparent" }, svg);
      const guide = svgEl("line", { y1: margin.top, y2: margin.top + plotH, stroke: "#57606a", "stroke-dasharray": "3 3", visibility: "hidden" }, svg);
      overlay.addEventListener("mousemove", (event) => {
        const box = svg.getBoundingClientRect();
        const x = xMin + ((event.clientX - box.left - margin.left) / plotW) * (xMax - xMin);
        const lines = [`${opts.xLabel || "x"}: ${xFormat(x)}`];
        for (const s of series) {
          let best = null;
          for (const p of s.points) if (p[1] !== null && (best === null || Math.abs(p[0] - x) < Math.abs(best[0] - x))) best = p;
          if (best) lines.push(`${s.name}: ${yFormat(best[1])}`);
        }
        guide.setAttribute("x1", event.clientX - box.left);
        guide.setAttribute("x2", event.clientX - box.left);
        guide.setAttribute("visibility", "visible");
        tip.show(lines.join("\n"), event.clientX - box.left, event.clientY - box.top);
      });
      overlay.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); tip.hide(); });
    }

    if (showLegend && series.length) {
      const legend = htmlEl("ul", { class: "plot-legend", "aria-label": "Legend" }, container);
      const ls = legend.style;
      ls.listStyle = "none"; ls.display = "flex"; ls.flexWrap = "wrap"; ls.gap = "4px 16px";
      ls.margin = "4px 0 0"; ls.padding = `0 0 0 ${margin.left}px`; ls.font = `13px ${FONT}`;
      for (const s of series) {
        const item = htmlEl("li", {}, legend);
        const key = svgEl("svg", { width: 26, height: 12, "aria-hidden": "true" }, item);
        key.style.display = "inline-block";
        key.style.verticalAlign = "middle";
        if (s.line) svgEl("line", { x1: 1, x2: 25, y1: 6, y2: 6, stroke: s.color, "stroke-width": 2.5, "stroke-dasharray": s.dashed ? "5 3" : null }, key);
        marker(key, s.shape, 13, 6, 3.5, s.color);
        item.append(` ${s.name}`);
      }
    }

    if (opts.table !== false && !empty && labelled) {
      // Labelled points (a scatter): one row per point.
      const many = series.length > 1;
      const rows = series.flatMap((s) => s.points.map((p, k) => [
        s.labels ? s.labels[k] : "", ...(many ? [s.name] : []), xFormat(p[0]), p[1] === null ? "" : yFormat(p[1]),
      ]));
      dataTable(container, opts.title || "Chart data", ["point", ...(many ? ["series"] : []), opts.xLabel || "x", opts.yLabel || "y"], rows.slice(0, 1000));
    } else if (opts.table !== false && !empty) {
      const xsAll = [...new Set(xs)].sort((a, b) => a - b);
      const lookup = series.map((s) => new Map(s.points.map((p) => [p[0], p[1]])));
      const rows = xsAll.slice(0, 1000).map((x) => [xFormat(x), ...lookup.map((m) => (m.has(x) ? yFormat(m.get(x)) : ""))]);
      dataTable(container, opts.title || "Chart data", [opts.xLabel || "x", ...series.map((s) => s.name)], rows);
    }
  }

  draw();
  watchWidth(container, draw);
  return { redraw: draw };
}

// Sequential blue scale for a value in [0, 1]; returns [css colour, relative luminance].
function blues(t) {
  const stops = [[247, 251, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
  const u = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(u), stops.length - 2);
  const f = u - i;
  const rgb = stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
  const lin = rgb.map((c) => { const v = c / 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; });
  return [`rgb(${rgb.join(",")})`, 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]];
}

/**
 * A square heatmap: labels (rows = columns), matrix[i][j] (null: no value), min, max.
 *
 * options: title, description, format (value -> text), notes (matrix of extra tooltip
 * text, e.g. the shared count), valueLabel ("kappa"), cellSize (px, at most; 56).
 */
export function heatmap(container, options) {
  const opts = { valueLabel: "value", cellSize: 56, ...options };
  const labels = (opts.labels || []).map(String);
  const n = labels.length;
  const matrix = opts.matrix || [];
  const format = opts.format || ((v) => v.toFixed(2));
  const min = finite(opts.min) ? opts.min : -1;
  const max = finite(opts.max) ? opts.max : 1;
  const id = `plot${++uid}`;

  function draw() {
    prepare(container);
    const avail = Math.max(container.clientWidth || 0, 240);
    const longest = labels.reduce((m, l) => Math.max(m, l.length), 0);
    const left = Math.min(200, 16 + longest * 7);
    const cell = Math.max(18, Math.min(opts.cellSize, Math.floor((avail - left - 90) / Math.max(n, 1))));
    const top = Math.min(160, 16 + longest * 5.2);
    const width = left + cell * n + 90;
    const height = top + cell * n + 12;
    const svg = svgEl("svg", {
      width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
      "aria-labelledby": `${id}-title ${id}-desc`, "font-family": FONT, class: "plot plot-heatmap",
    }, container);
    svgEl("title", { id: `${id}-title` }, svg).textContent = opts.title || "Heatmap";
    svgEl("desc", { id: `${id}-desc` }, svg).textContent =
      opts.description || `${n} by ${n} matrix of ${opts.valueLabel}, from ${format(min)} to ${format(max)}.`;
    const tip = tooltipFor(container);
    const fontSize = Math.min(13, Math.max(9, cell / 4));
    labels.forEach((l, i) => {
      svgEl("text", { x: left - 6, y: top + cell * i + cell / 2, "text-anchor": "end", "dominant-baseline": "middle", "font-size": 12, fill: "#1b1f24" }, svg).textContent = l;
      svgEl("text", {
        x: 0, y: 0, transform: `translate(${left + cell * i + cell / 2},${top - 6}) rotate(-40)`,
        "font-size": 12, fill: "#1b1f24",
      }, svg).textContent = l;
    });
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const v = matrix[i] ? matrix[i][j] : null;
        const x = left + cell * j;
        const y = top + cell * i;
        const has = finite(v);
        const [fill, lum] = has ? blues((v - min) / (max - min)) : ["#eaeef2", 0.85];
        const note = opts.notes && opts.notes[i] ? opts.notes[i][j] : null;
        const text = i === j ? `${labels[i]}` : `${labels[i]} vs ${labels[j]}\n${opts.valueLabel}: ${has ? format(v) : "no value"}${note ? `\n${note}` : ""}`;
        const rect = svgEl("rect", {
          x: x + 1, y: y + 1, width: cell - 2, height: cell - 2, rx: 3, fill,
          class: "plot-cell", tabindex: i === j ? null : 0, role: "img", "aria-label": text.replaceAll("\n", ", "),
        }, svg);
        if (i !== j) {
          const show = () => tip.show(text, x + cell / 2, y);
          rect.addEventListener("mouseenter", show);
          rect.addEventListener("focus", show);
          rect.addEventListener("mouseleave", tip.hide);
          rect.addEventListener("blur", tip.hide);
        }
        if (cell >= 30) {
          svgEl("text", {
            x: x + cell / 2, y: y + cell / 2, "text-anchor": "middle", "dominant-baseline": "middle",
            "font-size": fontSize, "pointer-events": "none",
            // Dark text on light cells, white on dark: the higher contrast of the two.
            fill: lum > 0.18 ? "#1b1f24" : "#ffffff",
          }, svg).textContent = i === j ? "—" : has ? format(v) : "n/a";
        }
      }
    }
    // Colour scale.
    const barX = left + cell * n + 24;
    const barH = Math.max(cell * n, 60);
    const gradId = `${id}-grad`;
    const grad = svgEl("linearGradient", { id: gradId, x1: 0, x2: 0, y1: 1, y2: 0 }, svgEl("defs", {}, svg));
    for (let k = 0; k <= 10; k++) svgEl("stop", { offset: `${k * 10}%`, "stop-color": blues(k / 10)[0] }, grad);
    svgEl("rect", { x: barX, y: top, width: 14, height: barH, fill: `url(#${gradId})`, stroke: "#57606a", "stroke-width": 0.5 }, svg);
    for (const [v, yy] of [[max, top], [(min + max) / 2, top + barH / 2], [min, top + barH]]) {
      svgEl("text", { x: barX + 20, y: yy, "dominant-baseline": "middle", "font-size": 11, fill: "#3d444d" }, svg).textContent = format(v);
    }
    if (n > 0) {
      const rows = labels.map((l, i) => [l, ...labels.map((_, j) => (i === j ? "—" : finite(matrix[i]?.[j]) ? format(matrix[i][j]) : "n/a"))]);
      dataTable(container, opts.title || "Heatmap data", ["", ...labels], rows);
    }
  }

  draw();
  watchWidth(container, draw);
  return { redraw: draw };
}
