// A line chart in SVG: steps on x, one or more series on y. Written here rather than taken
// from an npm chart library because it is the only chart the console draws (a few series of
// at most some thousand points), and this way the package needs no JavaScript build step.
const NS = "http://www.w3.org/2000/svg";
const W = 560;
const H = 220;
const PAD = { left: 56, right: 16, top: 24, bottom: 34 };
const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed"];

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function ticks(lo, hi, n = 4) {
  if (hi === lo) return [lo];
  return Array.from({ length: n + 1 }, (_, i) => lo + ((hi - lo) * i) / n);
}

function label(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1e5)) return v.toExponential(1);
  return Number(v.toPrecision(3)).toString();
}

// series: [{name, points: [[step, value], ...]}]; references: [{name, value}], drawn as dashed
// horizontal lines in the colour of the series of that name (a score to beat), explained by
// `note` under the chart. The element says how many points and reference lines it drew
// (data-points, data-references), for people reading the page with tools and for the browser
// tests.
export function lineChart(title, series, { xLabel = "step", references = [], note = "" } = {}) {
  const all = series.flatMap((one) => one.points);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img" });
  svg.dataset.points = String(all.length);
  svg.dataset.references = String(references.length);
  svg.append(s("title", {}, title), s("text", { x: PAD.left, y: 15, class: "chart-title" }, title));
  if (all.length === 0 && references.length === 0) {
    svg.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "muted" }, "no points yet"));
    return svg;
  }
  const xs = all.length ? all.map((p) => p[0]) : [0];
  const ys = [...all.map((p) => p[1]), ...references.map((r) => r.value)];
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = [y0 - 0.5, y1 + 0.5];
  const px = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const py = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  for (const t of ticks(y0, y1)) {
    svg.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: py(t), y2: py(t), class: "grid" }));
    svg.append(s("text", { x: PAD.left - 6, y: py(t) + 4, "text-anchor": "end", class: "tick" }, label(t)));
  }
  for (const t of ticks(x0, x1)) {
    svg.append(s("text", { x: px(t), y: H - PAD.bottom + 16, "text-anchor": "middle", class: "tick" }, label(Math.round(t))));
  }
  svg.append(s("text", { x: W - PAD.right, y: H - 4, "text-anchor": "end", class: "tick" }, xLabel));
  const colorOf = (name) => {
    const i = series.findIndex((one) => one.name === name);
    return i < 0 ? "#6b7280" : COLORS[i % COLORS.length];
  };
  if (references.length && note) svg.append(s("text", { x: PAD.left, y: H - 4, class: "tick" }, note));
  for (const ref of references) {
    const line = s("line", {
      x1: PAD.left, x2: W - PAD.right, y1: py(ref.value), y2: py(ref.value),
      stroke: colorOf(ref.name), "stroke-width": 1.5, "stroke-dasharray": "6 4", class: "reference",
    });
    line.append(s("title", {}, `${ref.label || ref.name}: ${label(ref.value)}`));
    svg.append(line);
  }
  series.forEach((one, i) => {
    const color = COLORS[i % COLORS.length];
    const pts = [...one.points].sort((a, b) => a[0] - b[0]);
    if (pts.length > 1) {
      const d = pts.map(([x, y], j) => `${j ? "L" : "M"}${px(x).toFixed(1)},${py(y).toFixed(1)}`).join("");
      svg.append(s("path", { d, fill: "none", stroke: color, "stroke-width": 2 }));
    }
    for (const [x, y] of pts) {
      const dot = s("circle", { cx: px(x), cy: py(y), r: pts.length > 60 ? 1.5 : 3, fill: color });
      dot.append(s("title", {}, `${one.name} at ${xLabel} ${x}: ${label(y)}`));
      svg.append(dot);
    }
    svg.append(s("text", { x: W - PAD.right - 150 * (series.length - 1 - i), y: 15, fill: color, "text-anchor": "end", class: "legend" }, one.name));
  });
  return svg;
}
