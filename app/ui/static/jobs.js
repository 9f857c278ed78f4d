// The home page: the jobs list (refreshed every two seconds) and the form to start a job.

import { ApiError, getJSON, postJSON, rooted } from "./api.js";
import { fill, fmt, h, layerTable, messageArea, progressBar, statusBadge, when } from "./dom.js";

const REFRESH_MS = 2000;
const ACTIVE = new Set(["queued", "running"]);
const OPTIMIZERS = ["adam", "sgd", "momentum", "rmsprop"];

export async function jobsPage(view) {
  const [datasets, presets] = await Promise.all([getJSON("/datasets"), presetNames()]);
  const list = jobList();
  fill(
    view,
    h("h1", {}, "Training jobs"),
    h("div", { class: "columns form-and-list" }, jobForm(datasets.datasets, presets), list.element),
  );
  list.start();
}

/** The preset names, as the API schema lists them (one place for that list: the server). */
async function presetNames() {
  const schema = await getJSON("/openapi.json");
  return schema.components.schemas.PresetName.enum;
}

// ---------------------------------------------------------------------------- the list

function jobList() {
  const body = h("tbody");
  const summary = h("p", { class: "muted" }, "Loading…");
  const message = messageArea();
  const rows = new Map();
  const element = h(
    "section",
    { class: "panel", "aria-labelledby": "jobs-title" },
    h("h2", { id: "jobs-title" }, "Jobs"),
    summary,
    message,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { id: "jobs-table" },
        h(
          "thead",
          {},
          h("tr", {}, ["Job", "Status", "Progress", "Latest cost", "Created", ""].map((t) => h("th", { scope: "col" }, t))),
        ),
        body,
      ),
    ),
  );

  function row(job) {
    const cells = {
      name: h("td"),
      status: h("td"),
      progress: h("td"),
      cost: h("td", { class: "num" }),
      created: h("td"),
      action: h("td"),
    };
    const tr = h("tr", { "data-job-id": job.id }, Object.values(cells));
    fill(cells.name, h("a", { href: rooted(`/ui/jobs/${job.id}`), title: job.id }, job.name || `${job.id.slice(0, 8)}…`));
    cells.created.textContent = when(job.created_at);
    return { tr, cells, status: null };
  }

  function update(entry, job, latestCost) {
    const { cells } = entry;
    if (entry.status !== job.status) {
      fill(cells.status, statusBadge(job.status));
      fill(
        cells.action,
        ACTIVE.has(job.status)
          ? h("button", { type: "button", class: "small", onclick: () => cancel(job.id) }, "Cancel")
          : null,
      );
      entry.status = job.status;
    }
    const p = job.progress;
    fill(
      cells.progress,
      progressBar(p.fraction, `progress of ${job.name || job.id}`),
      ` ${Math.round(100 * p.fraction)}% · epoch ${p.epoch}/${p.epochs}`,
    );
    cells.cost.textContent = fmt(latestCost);
  }

  async function cancel(jobId) {
    try {
      await postJSON(`/jobs/${jobId}/cancel`);
      await refresh();
    } catch (error) {
      message.textContent = error.message;
    }
  }

  /** The cost of a running job's last iteration, else its last epoch's. */
  async function latestCost(job) {
    if (job.status === "running" && job.progress.iteration > 0) {
      const since = job.progress.iteration - 1;
      const costs = await getJSON(`/jobs/${job.id}/costs?since=${since}`);
      const last = costs.iterations.at(-1);
      if (last) return last.cost;
    }
    return job.metrics?.cost ?? null;
  }

  async function refresh() {
    const page = await getJSON("/jobs?limit=50");
    const costs = await Promise.all(page.jobs.map(latestCost));
    const seen = new Set();
    page.jobs.forEach((job, i) => {
      seen.add(job.id);
      if (!rows.has(job.id)) rows.set(job.id, row(job));
      update(rows.get(job.id), job, costs[i]);
    });
    for (const id of rows.keys()) if (!seen.has(id)) rows.delete(id);
    // Re-append in the API's order (newest first); moving a node keeps its focus state.
    page.jobs.forEach((job) => body.append(rows.get(job.id).tr));
    for (const tr of [...body.children]) if (!seen.has(tr.dataset.jobId)) tr.remove();
    summary.textContent = page.count
      ? `${page.count} job${page.count === 1 ? "" : "s"}${page.count > page.jobs.length ? `, newest ${page.jobs.length} shown` : ""}`
      : "No jobs yet: start one with the form.";
  }

  async function loop() {
    if (!document.hidden || !rows.size) {
      try {
        await refresh();
        message.textContent = "";
      } catch (error) {
        message.textContent = `Could not refresh the jobs: ${error.message}`;
      }
    }
    setTimeout(loop, REFRESH_MS); // a background tab waits until it is shown again
  }

  return { element, start: loop };
}

// ---------------------------------------------------------------------------- the form

/** An example network for `dataset`: a starting point for the JSON editor. */
function exampleArchitecture(dataset) {
  return {
    input_shape: dataset.input_shape,
    layers: [
      { type: "conv", filters: 8, kernel_size: 3, padding: "same", activation: "relu" },
      { type: "maxpool", pool_size: 2 },
      { type: "dense", units: dataset.classes.length, activation: "softmax" },
    ],
  };
}

function field(id, label, control, hint) {
  const error = h("p", { class: "field-error", id: `${id}-error`, role: "alert" });
  control.id = id;
  control.setAttribute("aria-describedby", `${id}-error`);
  return {
    element: h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("p", { class: "hint" }, hint) : null, error),
    error,
  };
}

function jobForm(datasets, presets) {
  const controls = {
    dataset: h(
      "select",
      { name: "dataset" },
      datasets.map((d) =>
        h("option", { value: d.id }, `${d.name} (${d.n_samples} samples, ${d.input_shape.join("×")}, ${d.classes.length} classes)`),
      ),
    ),
    preset: h("select", { name: "preset" }, presets.map((p) => h("option", { value: p }, p))),
    architecture: h("textarea", { name: "architecture", rows: 12, spellcheck: "false", class: "code" }),
    epochs: h("input", { name: "epochs", type: "number", value: 2, inputmode: "numeric" }),
    batch_size: h("input", { name: "batch_size", type: "number", value: 32, inputmode: "numeric" }),
    optimizer: h("select", { name: "optimizer" }, OPTIMIZERS.map((o) => h("option", { value: o }, o))),
    learning_rate: h("input", { name: "learning_rate", type: "text", value: "0.001", inputmode: "decimal" }),
    validation_split: h("input", { name: "validation_split", type: "text", value: "0.1", inputmode: "decimal" }),
    seed: h("input", { name: "seed", type: "number", value: 0, inputmode: "numeric" }),
    name: h("input", { name: "name", type: "text", placeholder: "optional label" }),
  };
  const fields = {
    dataset: field("job-dataset", "Dataset", controls.dataset),
    preset: field("job-preset", "Preset", controls.preset, "Adapts its input and output to the dataset; its layer table shows on the job's page."),
    architecture: field("job-architecture", "Architecture (JSON)", controls.architecture),
    epochs: field("job-epochs", "Epochs", controls.epochs),
    batch_size: field("job-batch-size", "Batch size", controls.batch_size),
    optimizer: field("job-optimizer", "Optimizer", controls.optimizer),
    learning_rate: field("job-learning-rate", "Learning rate", controls.learning_rate),
    validation_split: field("job-validation-split", "Validation split", controls.validation_split),
    seed: field("job-seed", "Seed", controls.seed),
    name: field("job-name", "Name", controls.name),
  };
  const kind = {
    preset: h("input", { type: "radio", name: "kind", value: "preset", id: "kind-preset", checked: true }),
    custom: h("input", { type: "radio", name: "kind", value: "custom", id: "kind-custom" }),
  };
  const shapes = h("div", { id: "layer-table", "aria-live": "polite" });
  const formError = messageArea();
  const submit = h("button", { type: "submit" }, "Start training");
  let edited = false;

  const datasetById = (id) => datasets.find((d) => d.id === id);
  const prefill = () => {
    if (edited) return;
    controls.architecture.value = JSON.stringify(exampleArchitecture(datasetById(controls.dataset.value)), null, 2);
    checkArchitecture();
  };

  function showKind() {
    const custom = kind.custom.checked;
    fields.preset.element.hidden = custom;
    fields.architecture.element.hidden = !custom;
    shapes.hidden = !custom;
    if (custom) checkArchitecture();
  }

  /** The shape table of the JSON architecture, from the server's own check. */
  let checkTimer = null;
  let checkSeq = 0;
  function checkArchitecture() {
    clearTimeout(checkTimer);
    checkTimer = setTimeout(async () => {
      const seq = ++checkSeq;
      fields.architecture.error.textContent = "";
      let architecture;
      try {
        architecture = JSON.parse(controls.architecture.value);
      } catch (error) {
        fields.architecture.error.textContent = `Not valid JSON: ${error.message}`;
        fill(shapes);
        return;
      }
      if (architecture && typeof architecture === "object" && !("input_shape" in architecture)) {
        // as POST /jobs does: the input shape is the chosen dataset's
        architecture = { input_shape: datasetById(controls.dataset.value).input_shape, ...architecture };
      }
      try {
        const summary = await postJSON("/architectures/validate", { architecture });
        if (seq === checkSeq) fill(shapes, layerTable(summary));
      } catch (error) {
        if (seq !== checkSeq) return;
        fill(shapes);
        fields.architecture.error.textContent = describeArchitectureError(error);
      }
    }, 300);
  }

  function clearErrors() {
    for (const f of Object.values(fields)) f.error.textContent = "";
    formError.textContent = "";
  }

  function body() {
    const number = (control) => (control.value.trim() === "" ? null : Number(control.value));
    let architecture = controls.preset.value;
    if (kind.custom.checked) {
      try {
        architecture = JSON.parse(controls.architecture.value);
      } catch (error) {
        fields.architecture.error.textContent = `Not valid JSON: ${error.message}`;
        return null;
      }
    }
    return {
      dataset_id: controls.dataset.value,
      architecture,
      training: {
        epochs: number(controls.epochs),
        batch_size: number(controls.batch_size),
        optimizer: { name: controls.optimizer.value, learning_rate: number(controls.learning_rate) },
        validation_split: number(controls.validation_split),
        seed: number(controls.seed),
      },
      name: controls.name.value.trim() || null,
    };
  }

  /** Put each problem the server found next to the field it concerns (from its `loc`);
   * the sentence that sums them up goes under the form when no field takes it. */
  function showErrors(error) {
    const custom = kind.custom.checked;
    const placed = [];
    let unplaced = 0;
    for (const [path, message] of error.fieldErrors()) {
      const name = fieldOf(path, custom);
      if (name && fields[name]) {
        fields[name].error.textContent ||= message;
        placed.push(name);
      } else {
        unplaced += 1;
      }
    }
    if (!placed.length && error.status === 404 && /dataset/i.test(error.message)) {
      fields.dataset.error.textContent = error.message;
      placed.push("dataset");
    }
    if (!placed.length || unplaced) formError.textContent = error.message;
    if (placed.length) controls[placed[0]].focus();
  }

  async function onSubmit(event) {
    event.preventDefault();
    clearErrors();
    const request = body();
    if (!request) return;
    submit.disabled = true;
    try {
      const job = await postJSON("/jobs", request);
      location.assign(rooted(`/ui/jobs/${job.id}`));
    } catch (error) {
      if (error instanceof ApiError) showErrors(error);
      else formError.textContent = String(error);
      submit.disabled = false;
    }
  }

  controls.dataset.addEventListener("change", prefill);
  controls.architecture.addEventListener("input", () => {
    edited = true;
    checkArchitecture();
  });
  kind.preset.addEventListener("change", showKind);
  kind.custom.addEventListener("change", showKind);
  prefill();
  showKind();

  return h(
    "section",
    { class: "panel", "aria-labelledby": "form-title" },
    h("h2", { id: "form-title" }, "Start a job"),
    h(
      "form",
      { id: "job-form", novalidate: true, onsubmit: onSubmit },
      fields.dataset.element,
      h(
        "fieldset",
        { class: "kind" },
        h("legend", {}, "Architecture"),
        h("label", { for: "kind-preset" }, kind.preset, " preset"),
        h("label", { for: "kind-custom" }, kind.custom, " JSON"),
      ),
      fields.preset.element,
      fields.architecture.element,
      shapes,
      h(
        "div",
        { class: "grid-fields" },
        fields.epochs.element,
        fields.batch_size.element,
        fields.optimizer.element,
        fields.learning_rate.element,
        fields.validation_split.element,
        fields.seed.element,
      ),
      fields.name.element,
      formError,
      submit,
    ),
  );
}

/** What the architecture check found: each problem by its place in the config. */
function describeArchitectureError(error) {
  const issues = [...error.fieldErrors()];
  if (issues.length < 2) return error.message;
  return issues.map(([path, message]) => `${path.replace(/^architecture\.?/, "") || "architecture"}: ${message}`).join("; ");
}

/** The form field that a problem's location (e.g. "training.epochs") concerns. */
function fieldOf(path, custom) {
  if (path.startsWith("architecture")) return custom ? "architecture" : "preset";
  if (path === "dataset_id") return "dataset";
  if (path.startsWith("training.optimizer")) {
    return path.endsWith("learning_rate") ? "learning_rate" : "optimizer";
  }
  const name = path.replace(/^training\./, "");
  return ["epochs", "batch_size", "validation_split", "seed", "name"].includes(name) ? name : null;
}
