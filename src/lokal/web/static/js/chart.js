// Client-side latency chart: one bar per answer in three panels (TTFT, total time, tokens/s), coloured by
// model, drawn as inline SVG so the page needs no chart library. Redraws are coalesced to one per frame,
// so a stream can update the chart on every token.

const NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#2563eb", "#ea580c", "#059669", "#db2777", "#7c3aed", "#0891b2", "#ca8a04", "#dc2626"];
const WIDTH = 320;
const LEFT = 4;
const RIGHT = 4;
const LEGEND_H = 20;
const TITLE_H = 16;
const PLOT_H = 52;
const GAP = 10;

export const METRICS = [
  { key: "ttft", title: "Time to first token", format: formatMs },
  { key: "total", title: "Total time", format: formatMs },
  { key: "tps", title: "Tokens per second", format: (v) => `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} tok/s` },
];

export function formatMs(ms) {
  if (ms == null) return "–";
  return ms < 1000 ? `${ms.toFixed(0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function median(values) {
  const v = values.filter((x) => x != null && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export class LatencyChart {
  constructor(container, summary, { maxBars = 20 } = {}) {
    this.container = container;
    this.summary = summary;
    this.maxBars = maxBars;
    this.records = [];
    this.colors = new Map();
    this.pending = false;
    this.draw();
  }

  colorFor(model) {
    if (!this.colors.has(model)) this.colors.set(model, PALETTE[this.colors.size % PALETTE.length]);
    return this.colors.get(model);
  }

  // rec: {id, model, ttft, total, tokens, tps, state}; the chart keeps the object and redraws from it.
  upsert(rec) {
    if (!this.records.includes(rec)) this.records.push(rec);
    this.colorFor(rec.model);
    this.schedule();
  }

  remove(rec) {
    this.records = this.records.filter((r) => r !== rec);
    this.schedule();
  }

  clear() {
    this.records = [];
    this.colors.clear();
    this.schedule();
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const shown = this.records.slice(-this.maxBars);
    const height = LEGEND_H + METRICS.length * (TITLE_H + PLOT_H + GAP);
    const svg = el("svg", {
      viewBox: `0 0 ${WIDTH} ${height}`, width: "100%", role: "img",
      "aria-label": "latency per answer: time to first token, total time and tokens per second",
      "data-answers": this.records.length,
      "data-models": [...new Set(this.records.map((r) => r.model))].join(","),
    });

    // Legend first: it may wrap, and the panels start below it.
    const legend = [];
    let x = LEFT;
    let y = 5;
    for (const [model, color] of this.colors) {
      if (!this.records.some((r) => r.model === model)) continue;
      const w = 22 + model.length * 6.2;
      if (x > LEFT && x + w > WIDTH - RIGHT) {
        x = LEFT;
        y += LEGEND_H - 4;
      }
      legend.push(el("rect", { x, y, width: 10, height: 10, rx: 2, fill: color }));
      legend.push(el("text", { x: x + 14, y: y + 9, class: "legend" }, model));
      x += w;
    }
    if (!this.records.length) legend.push(el("text", { x: LEFT, y: 14, class: "legend muted" }, "no answers yet"));
    const legendH = y - 5 + LEGEND_H;
    svg.setAttribute("viewBox", `0 0 ${WIDTH} ${legendH - LEGEND_H + height}`);
    svg.append(...legend);

    const slot = (WIDTH - LEFT - RIGHT) / this.maxBars;
    const barW = Math.max(2, slot * 0.72);
    METRICS.forEach((metric, m) => {
      const top = legendH + m * (TITLE_H + PLOT_H + GAP);
      const base = top + TITLE_H + PLOT_H;
      const values = shown.map((r) => r[metric.key]);
      const max = Math.max(0, ...values.filter((v) => v != null && Number.isFinite(v)));
      svg.append(el("text", { x: LEFT, y: top + 11, class: "panel-title" }, metric.title));
      svg.append(el("text", { x: WIDTH - RIGHT, y: top + 11, class: "panel-max", "text-anchor": "end" },
        max > 0 ? `max ${metric.format(max)}` : ""));
      svg.append(el("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: top + TITLE_H, y2: top + TITLE_H, class: "grid" }));
      svg.append(el("line", { x1: LEFT, x2: WIDTH - RIGHT, y1: base, y2: base, class: "axis" }));
      shown.forEach((rec, i) => {
        const v = rec[metric.key];
        if (v == null || !Number.isFinite(v) || max <= 0) return;
        const h = Math.max(1.5, (v / max) * PLOT_H);
        const bar = el("rect", {
          x: LEFT + i * slot + (slot - barW) / 2, y: base - h, width: barW, height: h, rx: 1.5,
          fill: this.colorFor(rec.model), class: `bar ${rec.state}`,
          "data-metric": metric.key, "data-model": rec.model, "data-value": v.toFixed(2),
        });
        bar.append(el("title", {}, `#${rec.id} ${rec.model} — ${metric.title}: ${metric.format(v)}`
          + (rec.state === "streaming" ? " (streaming)" : rec.state === "stopped" ? " (stopped)" : "")));
        svg.append(bar);
      });
    });

    this.container.replaceChildren(svg);
    this.drawSummary();
  }

  drawSummary() {
    const models = [...this.colors.keys()].filter((m) => this.records.some((r) => r.model === m));
    const rows = [];
    if (models.length) {
      const head = document.createElement("tr");
      for (const h of ["model", "n", "TTFT", "total", "tok/s"]) {
        const th = document.createElement("th");
        th.textContent = h;
        head.append(th);
      }
      rows.push(head);
    }
    for (const model of models) {
      const recs = this.records.filter((r) => r.model === model && r.state !== "streaming");
      const tr = document.createElement("tr");
      tr.dataset.model = model;
      const name = document.createElement("td");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = this.colorFor(model);
      name.append(swatch, model);
      const tps = median(recs.map((r) => r.tps));
      const cells = [String(recs.length), formatMs(median(recs.map((r) => r.ttft))),
        formatMs(median(recs.map((r) => r.total))), tps == null ? "–" : tps.toFixed(1)];
      tr.append(name, ...cells.map((c) => {
        const td = document.createElement("td");
        td.textContent = c;
        return td;
      }));
      rows.push(tr);
    }
    this.summary.replaceChildren(...rows);
    this.summary.title = models.length ? "medians over finished answers" : "";
  }
}
