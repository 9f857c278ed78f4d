// Live line charts on uPlot: points are appended as they arrive without resetting a zoom the
// user chose (drag to zoom, double-click or "Reset zoom" to follow the data again), and the
// per-iteration cost can be smoothed (an exponential moving average, bias-corrected as
// TensorBoard's is, so the first points are not pulled towards zero).

import uPlot from "./vendor/uplot/uPlot.esm.js";

const COLORS = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df"];
// Whole-number ticks for iterations and epochs: 1, 2, 5, 10, 20, 50, ...
const WHOLE_STEPS = Array.from({ length: 24 }, (_, i) => [1, 2, 5][i % 3] * 10 ** Math.floor(i / 3));

/** The moving average of `values` with weight `weight` (0: none); nulls stay gaps. */
export function smooth(values, weight) {
  if (!weight) return values.slice();
  let average = 0;
  let count = 0;
  return values.map((value) => {
    if (value === null || !Number.isFinite(value)) return null;
    average = average * weight + (1 - weight) * value;
    count += 1;
    return average / (1 - weight ** count);
  });
}

export class LiveChart {
  /**
   * series: [{label, scale ("y" or "acc"), dash, faint}]; axes are drawn for the scales used.
   * `container` gets the chart; it resizes with the container.
   */
  constructor(container, { xLabel, series, height = 260 }) {
    this.container = container;
    this.x = [];
    this.columns = series.map(() => []);
    this.zoomed = false;
    const scales = new Set(series.map((s) => s.scale ?? "y"));
    const axes = [{ label: xLabel, incrs: WHOLE_STEPS }];
    if (scales.has("y")) axes.push({ scale: "y", label: "cost" });
    if (scales.has("acc")) {
      axes.push({ scale: "acc", label: "accuracy", side: 1, grid: { show: false } });
    }
    const options = {
      width: this.width(),
      height,
      scales: { x: { time: false }, acc: { range: [0, 1] } },
      axes,
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      series: [
        { label: xLabel },
        ...series.map((s, i) => ({
          label: s.label,
          scale: s.scale ?? "y",
          stroke: s.faint ? `${COLORS[i % COLORS.length]}55` : COLORS[i % COLORS.length],
          width: s.faint ? 1 : 1.5,
          dash: s.dash,
          spanGaps: false,
          points: { show: s.points ?? false },
        })),
      ],
      hooks: {
        setSelect: [
          (u) => {
            if (u.select.width > 0) this.zoomed = true;
          },
        ],
      },
    };
    this.plot = new uPlot(options, [this.x, ...this.columns], container);
    this.plot.over.addEventListener("dblclick", () => {
      this.zoomed = false;
    });
    new ResizeObserver(() => this.plot.setSize({ width: this.width(), height })).observe(container);
  }

  width() {
    return Math.max(this.container.clientWidth, 240);
  }

  /** Replace every series (columns: one array per series, aligned with `x`). */
  setData(x, columns) {
    this.x = x;
    this.columns = columns;
    this.redraw();
  }

  redraw() {
    this.plot.setData([this.x, ...this.columns], !this.zoomed);
  }

  resetZoom() {
    this.zoomed = false;
    this.redraw();
  }
}
