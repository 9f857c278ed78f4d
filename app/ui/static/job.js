// One job's page: cost curves drawn live from the event stream, progress, settings, results.
//
// The history so far comes from /costs (thinned when it is very long); the stream then
// continues from its last iteration: each `costs` event's id is its last iteration, so both
// the first connection and any reconnection after a drop send Last-Event-ID and get only what
// is newer. Points are still keyed
// (iterations by number, epochs by epoch), so nothing is drawn twice whatever the server
// repeats. An epoch's summary is written just after its last iteration; a summary the stream
// skipped (it can pass between the two writes) is fetched from /costs once the next epoch
// has begun, so the epoch curve has no gaps.

import { ApiError, blobUrl, download, follow, getJSON, postJSON, rooted } from "./api.js";
import { LiveChart, smooth } from "./chart.js";
import { duration, fill, fmt, h, layerTable, messageArea, percent, progressBar, statusBadge, table, when } from "./dom.js";

const ACTIVE = new Set(["queued", "running"]);
const HISTORY_POINTS = 5000;

export async function jobPage(view, jobId) {
  let job = await getJSON(`/jobs/${jobId}`);
  const state = { iterations: [], costs: [], epochs: new Map(), lastOfEpoch: new Map(), connections: 0 };

  const title = h("h1");
  const badge = h("span");
  const cancelButton = h("button", { type: "button", class: "small", onclick: cancel }, "Cancel job");
  const message = messageArea();
  const bar = progressBar(0, "training progress");
  const progressText = h("p", { id: "progress-text" });
  const streamState = h("p", { id: "stream-state", class: "muted", "aria-live": "polite" });
  const pointCount = h("span", { id: "point-count" });
  const smoothing = h("input", { id: "smoothing", type: "range", min: 0, max: 0.99, step: 0.01, value: 0.6 });
  const smoothingValue = h("output", { for: "smoothing" }, "0.60");
  const iterationBox = h("div", { class: "chart", id: "iteration-chart" });
  const epochBox = h("div", { class: "chart", id: "epoch-chart" });
  const epochTable = h("div", { id: "epoch-table" });
  const settings = h("div", { id: "settings" });
  const results = h("div", { id: "results" });

  fill(
    view,
    h("div", { class: "title-row" }, title, badge, cancelButton),
    message,
    h("section", { class: "panel", "aria-label": "progress" }, bar, progressText, streamState),
    h(
      "section",
      { class: "panel", "aria-labelledby": "iter-title" },
      h("h2", { id: "iter-title" }, "Cost per iteration ", h("small", { class: "muted" }, pointCount)),
      h(
        "div",
        { class: "chart-tools" },
        h("label", { for: "smoothing" }, "Smoothing"),
        smoothing,
        smoothingValue,
        h("button", { type: "button", class: "small", onclick: () => iterationChart.resetZoom() }, "Reset zoom"),
        h("span", { class: "hint" }, "Drag across the chart to zoom; double-click to follow the data again."),
      ),
      iterationBox,
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "epoch-title" },
      h("h2", { id: "epoch-title" }, "Per epoch"),
      h("div", { class: "chart-tools" }, h("button", { type: "button", class: "small", onclick: () => epochChart.resetZoom() }, "Reset zoom")),
      epochBox,
      epochTable,
    ),
    h("div", { class: "columns" }, h("section", { class: "panel", "aria-labelledby": "settings-title" }, h("h2", { id: "settings-title" }, "Settings"), settings), h("section", { class: "panel", "aria-labelledby": "results-title" }, h("h2", { id: "results-title" }, "Results"), results)),
  );

  const iterationChart = new LiveChart(iterationBox, {
    xLabel: "iteration",
    series: [{ label: "cost", faint: true }, { label: "smoothed cost" }],
  });
  const epochChart = new LiveChart(epochBox, {
    xLabel: "epoch",
    series: [
      { label: "train cost", points: true },
      { label: "validation cost", dash: [6, 4], points: true },
      { label: "train accuracy", scale: "acc", points: true },
      { label: "validation accuracy", scale: "acc", dash: [6, 4], points: true },
    ],
  });

  // The page's state, for the browser console and the tests.
  window.cnnDashboard = { job: state, charts: { iteration: iterationChart, epoch: epochChart } };

  let drawPending = false;
  function draw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(() => {
      drawPending = false;
      iterationChart.setData(state.iterations, [state.costs, smooth(state.costs, Number(smoothing.value))]);
      const epochs = [...state.epochs.values()].sort((a, b) => a.epoch - b.epoch);
      epochChart.setData(
        epochs.map((e) => e.epoch),
        [epochs.map((e) => e.cost), epochs.map((e) => e.val_cost), epochs.map((e) => e.train_accuracy), epochs.map((e) => e.val_accuracy)],
      );
      pointCount.textContent = `${state.iterations.length} points`;
      fill(
        epochTable,
        epochs.length
          ? table(
              ["epoch", "train cost", "train accuracy", "validation cost", "validation accuracy", "seconds"],
              epochs.map((e) => [String(e.epoch), fmt(e.cost), percent(e.train_accuracy), fmt(e.val_cost), percent(e.val_accuracy), fmt(e.seconds, 3)]),
            )
          : null,
      );
    });
  }
  smoothing.addEventListener("input", () => {
    smoothingValue.textContent = Number(smoothing.value).toFixed(2);
    draw();
  });

  function addCosts(history) {
    for (const point of history.iterations) {
      if (point.iteration <= (state.iterations.at(-1) ?? 0)) continue; // already drawn
      state.iterations.push(point.iteration);
      state.costs.push(point.cost);
      state.lastOfEpoch.set(point.epoch, point.iteration);
    }
    for (const summary of history.epochs) state.epochs.set(summary.epoch, summary);
    fetchSkippedEpochs();
    draw();
  }

  const asked = new Set();
  /** Fetch the summary of every finished epoch that the stream did not bring. */
  function fetchSkippedEpochs(finished = false) {
    const current = Math.max(0, ...state.lastOfEpoch.keys());
    for (const [epoch, last] of state.lastOfEpoch) {
      const over = epoch < current || (finished && job.status === "succeeded");
      if (!over || state.epochs.has(epoch) || asked.has(epoch)) continue;
      asked.add(epoch);
      getJSON(`/jobs/${jobId}/costs?since=${last - 1}&max_points=2`)
        .then((history) => {
          for (const summary of history.epochs) state.epochs.set(summary.epoch, summary);
          draw();
        })
        .catch((error) => {
          message.textContent = `Could not read epoch ${epoch}: ${error.message}`;
        });
    }
  }

  function showJob() {
    title.textContent = job.name || `Job ${job.id}`;
    fill(badge, statusBadge(job.status));
    cancelButton.hidden = !ACTIVE.has(job.status);
    const p = job.progress;
    bar.value = p.fraction;
    const parts = [`${Math.round(100 * p.fraction)}%`, `epoch ${p.epoch} of ${p.epochs}`];
    if (p.total_iterations) parts.push(`iteration ${p.iteration} of ${p.total_iterations}`);
    if (job.status === "running" && p.eta_seconds !== null) parts.push(`about ${duration(p.eta_seconds)} left`);
    if (job.status === "queued" && job.queue_position) parts.push(`number ${job.queue_position} in the queue`);
    progressText.textContent = parts.join(" · ");
    if (job.metrics) state.epochs.set(job.metrics.epoch, job.metrics);
    if (job.error) message.textContent = job.error;
  }

  async function showResults() {
    const links = [
      h("button", { type: "button", class: "small", onclick: () => showPng() }, "Show cost curve (PNG)"),
      h("button", { type: "button", class: "small", onclick: () => download(`/jobs/${jobId}/costs.png`, `costs-${jobId}.png`) }, "Download PNG"),
    ];
    const rows = [
      ["Status", statusBadge(job.status)],
      ["Created", when(job.created_at)],
      ["Started", when(job.started_at)],
      ["Finished", when(job.finished_at)],
    ];
    if (job.metrics) {
      rows.push(["Train accuracy", percent(job.metrics.train_accuracy)], ["Validation accuracy", percent(job.metrics.val_accuracy)], ["Final cost", fmt(job.metrics.cost)]);
    }
    if (job.model_id) {
      links.push(
        h("a", { class: "button small", href: rooted(`/ui/models/${job.model_id}`) }, "Open model"),
        h("button", { type: "button", class: "small", onclick: () => download(`/models/${job.model_id}/download`, `model-${job.model_id}.npz`) }, "Download model"),
      );
    }
    const png = h("div", { id: "png" });
    async function showPng() {
      fill(png, h("img", { src: await blobUrl(`/jobs/${jobId}/costs.png`), alt: "cost curve drawn by the server", class: "png" }));
    }
    fill(results, table(["", ""], rows, { className: "kv" }), h("div", { class: "links" }, links), png);
  }

  async function showSettings() {
    const t = job.training;
    const optimizer = Object.entries(t.optimizer).map(([k, v]) => `${k}=${v}`).join(", ");
    const rows = [
      ["Dataset", h("a", { href: rooted("/ui/datasets") }, job.dataset_id)],
      ["Epochs", String(t.epochs)],
      ["Batch size", String(t.batch_size)],
      ["Optimizer", optimizer],
      ["Validation split", String(t.validation_split)],
      ["Seed", String(t.seed)],
      ["Early stopping", t.early_stopping ? `patience ${t.early_stopping.patience}` : "off"],
    ];
    let layers;
    try {
      layers = layerTable(await postJSON("/architectures/validate", { architecture: job.architecture }));
    } catch (error) {
      layers = h("pre", { class: "code" }, JSON.stringify(job.architecture, null, 2));
    }
    fill(settings, table(["", ""], rows, { className: "kv" }), h("h3", {}, "Layers"), layers);
  }

  async function cancel() {
    try {
      job = await postJSON(`/jobs/${jobId}/cancel`);
      showJob();
    } catch (error) {
      message.textContent = error.message;
    }
  }

  showJob();
  showSettings();
  showResults();
  const history = await getJSON(`/jobs/${jobId}/costs?max_points=${HISTORY_POINTS}`);
  addCosts(history);
  follow(
    `/jobs/${jobId}/events`,
    String(history.last_iteration),
    (name, data) => {
      if (name === "costs") addCosts(data);
      else if (name === "progress" || name === "end") {
        job = data;
        showJob();
        draw();
        if (name === "end") {
          fetchSkippedEpochs(true);
          showResults();
        }
      }
    },
    (status) => {
      if (status === "live") state.connections += 1;
      const text = { connecting: "Connecting…", live: "● Live", reconnecting: "Connection lost; reconnecting…", ended: "Finished: the stream has ended." };
      streamState.textContent = status instanceof ApiError ? `Stream refused: ${status.message}` : text[status];
      streamState.dataset.state = status instanceof ApiError ? "error" : status;
    },
  );
}
