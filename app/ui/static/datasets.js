// Datasets: upload by drag and drop (or a file picker) with a progress bar, then each
// dataset's class counts and a grid of sample images per class.

import { ApiError, blobUrl, getJSON, request, upload } from "./api.js";
import { fill, fmt, h, messageArea, progressBar, when } from "./dom.js";

const PER_CLASS = 8;
const MAX_TILES = 1024; // the most tiles GET /datasets/{id}/samples draws in one sheet

export async function datasetsPage(view) {
  const list = h("div", { id: "dataset-list" });
  const message = messageArea();
  fill(view, h("h1", {}, "Datasets"), uploadPanel(onUploaded), message, list);

  async function showList(openId) {
    const { datasets } = await getJSON("/datasets");
    const open = openId ?? datasets[0]?.id;
    fill(list, datasets.map((d) => datasetCard(d, d.id === open, () => showList())));
    if (openId) list.querySelector(`[data-dataset-id="${openId}"]`)?.scrollIntoView({ block: "start" });
  }

  async function onUploaded(dataset) {
    await showList(dataset.id);
  }

  await showList();
}

function uploadPanel(onUploaded) {
  const input = h("input", { type: "file", id: "dataset-files", multiple: true, accept: ".npz,.zip,.gz,.idx1,.idx3,application/zip" });
  const name = h("input", { type: "text", id: "dataset-name", placeholder: "optional" });
  const bar = progressBar(0, "upload progress");
  bar.hidden = true;
  const status = h("p", { id: "upload-status", "aria-live": "polite" });
  const error = messageArea();
  const zone = h(
    "div",
    { class: "dropzone", id: "dropzone" },
    h("p", {}, "Drop a dataset here: one .npz (X, y), one .zip of one folder per class, or the two MNIST IDX files."),
    h("label", { for: "dataset-files", class: "button" }, "Choose files…"),
    input,
  );

  async function send(files) {
    if (!files.length) return;
    error.textContent = "";
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    if (name.value.trim()) form.append("name", name.value.trim());
    bar.hidden = false;
    bar.value = 0;
    status.textContent = `Uploading ${[...files].map((f) => f.name).join(", ")}…`;
    try {
      const dataset = await upload("/datasets", form, (fraction) => {
        bar.value = fraction;
        if (fraction >= 1) status.textContent = "Uploaded; the server is reading the data…";
      });
      bar.value = 1;
      status.textContent = `Stored “${dataset.name}”: ${dataset.n_samples} samples, ${dataset.classes.length} classes.`;
      await onUploaded(dataset);
    } catch (e) {
      bar.hidden = true;
      status.textContent = "";
      error.textContent = e instanceof ApiError ? `Upload refused: ${e.message}` : String(e);
    } finally {
      input.value = "";
    }
  }

  input.addEventListener("change", () => send(input.files));
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    send(event.dataTransfer.files);
  });

  return h(
    "section",
    { class: "panel", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Upload"),
    zone,
    h("div", { class: "field" }, h("label", { for: "dataset-name" }, "Name"), name),
    bar,
    status,
    error,
  );
}

function datasetCard(dataset, open, onDeleted) {
  const body = h("div", { class: "dataset-body" });
  const error = messageArea();
  const details = h(
    "details",
    { class: "panel dataset", "data-dataset-id": dataset.id, open },
    h("summary", {}, h("strong", {}, dataset.name), ` · ${fmt(dataset.n_samples)} samples · ${dataset.input_shape.join("×")} · ${dataset.classes.length} classes`),
    h("p", { class: "muted" }, `id ${dataset.id}${dataset.builtin ? " · built in" : ` · uploaded ${when(dataset.created_at)}`}`),
    body,
    error,
  );
  let loaded = false;
  const load = () => {
    if (!details.open || loaded) return;
    loaded = true;
    sampleGrid(dataset).then(
      (grid) => fill(body, grid),
      (e) => {
        error.textContent = `Could not load the samples: ${e.message}`;
      },
    );
  };
  details.addEventListener("toggle", load);
  load();
  if (!dataset.builtin) {
    details.append(
      h(
        "button",
        {
          type: "button",
          class: "small danger",
          onclick: async () => {
            if (!confirm(`Delete dataset “${dataset.name}”?`)) return;
            try {
              await request(`/datasets/${dataset.id}`, { method: "DELETE" });
              onDeleted();
            } catch (e) {
              error.textContent = e.message;
            }
          },
        },
        "Delete",
      ),
    );
  }
  return details;
}

/** Tiles cut from a PNG sheet of samples (one row per requested group), as canvases. */
export async function sheetTiles(path, [, height, width], rowCounts) {
  const image = new Image();
  image.src = await blobUrl(path);
  await image.decode();
  return rowCounts.map((count, row) =>
    Array.from({ length: count }, (_, column) => {
      const canvas = h("canvas", { width, height, class: "tile" });
      canvas.getContext("2d").drawImage(image, column * width, row * height, width, height, 0, 0, width, height);
      return canvas;
    }),
  );
}

/** Class counts as bars, and the first samples of each class. */
async function sampleGrid(dataset) {
  const counts = dataset.classes.map((name) => dataset.class_counts[name] ?? 0);
  const most = Math.max(...counts, 1);
  const perClass = Math.max(1, Math.min(PER_CLASS, Math.floor(MAX_TILES / counts.length)));
  const tiles = await sheetTiles(
    `/datasets/${dataset.id}/samples?per_class=${perClass}`,
    dataset.input_shape,
    counts.map((n) => Math.min(n, perClass)),
  );
  return h(
    "div",
    { class: "class-grid" },
    dataset.classes.map((name, label) =>
      h(
        "div",
        { class: "class-row", "data-class": name },
        h("div", { class: "class-name" }, h("strong", {}, name), h("span", { class: "muted" }, ` ${fmt(counts[label])}`)),
        h("div", { class: "count-bar", role: "img", "aria-label": `${counts[label]} samples` }, bar(counts[label] / most)),
        h("div", { class: "tiles", role: "img", "aria-label": `samples of class ${name}` }, tiles[label]),
      ),
    ),
  );
}

/** A bar filled to `fraction` (set through the CSSOM: the page's policy allows no inline styles). */
function bar(fraction) {
  const span = h("span");
  span.style.width = `${(100 * fraction).toFixed(1)}%`;
  return span;
}
