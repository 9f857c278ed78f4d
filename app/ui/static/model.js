// Models: the list, and one model's page: draw an input and watch the top classes change,
// predict uploaded images, evaluate on a labelled dataset (confusion matrix, per-class
// metrics, the misclassified samples of a cell), download.

import { ApiError, download, getJSON, request, rooted } from "./api.js";
import { sheetTiles } from "./datasets.js";
import { fill, fmt, h, layerTable, messageArea, percent, table, when } from "./dom.js";

const TOP_K = 5;
const MAX_SHOWN = 64;
const PREDICT_EVERY_MS = 150;

export async function modelsPage(view) {
  const { models } = await getJSON("/models");
  fill(
    view,
    h("h1", {}, "Models"),
    models.length
      ? table(
          ["Model", "Dataset", "Classes", "Parameters", "Validation accuracy", "Created"],
          models
            .slice()
            .reverse()
            .map((m) => [
              h("a", { href: rooted(`/ui/models/${m.id}`) }, m.name || m.id),
              m.dataset_id,
              String(m.classes.length),
              fmt(m.param_count),
              percent(m.metrics.val_accuracy),
              when(m.created_at),
            ]),
          { className: "models" },
        )
      : h("p", {}, "No models yet: a job that succeeds produces one. ", h("a", { href: rooted("/") }, "Start a job")),
  );
}

export async function modelPage(view, modelId) {
  const [model, schema, { datasets }] = await Promise.all([getJSON(`/models/${modelId}`), getJSON("/openapi.json"), getJSON("/datasets")]);
  const paths = schema.paths;
  const canEvaluate = Boolean(paths["/models/{model_id}/evaluate"]?.post);
  const formats = (paths["/models/{model_id}/download"]?.get?.parameters ?? []).find((p) => p.name === "format")?.schema?.enum;

  const downloads = h(
    "div",
    { class: "links" },
    h("button", { type: "button", class: "small", onclick: () => download(`/models/${modelId}/download`, `model-${modelId}.npz`) }, "Download model (.npz)"),
    formats?.includes("onnx")
      ? h("button", { type: "button", class: "small", onclick: () => download(`/models/${modelId}/download?format=onnx`, `model-${modelId}.onnx`) }, "Download ONNX")
      : null,
    h("a", { class: "button small", href: rooted(`/ui/jobs/${model.job_id}`) }, "Training job"),
  );
  const info = table(
    ["", ""],
    [
      ["Input", model.input_shape.join(" × ")],
      ["Classes", model.classes.join(", ")],
      ["Parameters", fmt(model.param_count)],
      ["Epochs trained", String(model.metrics.epochs_trained)],
      ["Train accuracy", percent(model.metrics.train_accuracy)],
      ["Validation accuracy", percent(model.metrics.val_accuracy)],
      ["Dataset", model.dataset_id],
      ["Created", when(model.created_at)],
    ],
    { className: "kv" },
  );
  fill(
    view,
    h("h1", {}, model.name || `Model ${model.id}`),
    h("div", { class: "columns" }, drawPanel(model), uploadPanel(model)),
    evaluatePanel(model, datasets, canEvaluate),
    h(
      "div",
      { class: "columns" },
      h("section", { class: "panel", "aria-labelledby": "about-title" }, h("h2", { id: "about-title" }, "About"), info, downloads),
      h("section", { class: "panel", "aria-labelledby": "layers-title" }, h("h2", { id: "layers-title" }, "Layers"), layerTable(model)),
    ),
  );
}

/** POST images to the model; resolves to its predictions, in the order of `files`. */
async function predict(model, files) {
  const form = new FormData();
  for (const [blob, name] of files) form.append("files", blob, name);
  const response = await request(`/models/${model.id}/predict?top_k=${TOP_K}`, { method: "POST", body: form });
  return (await response.json()).predictions;
}

function topKBars(prediction) {
  return h(
    "ol",
    { class: "topk" },
    prediction.top_k.map((score, i) => {
      const fillBar = h("span", { class: i === 0 ? "best" : "" });
      fillBar.style.width = `${(100 * score.probability).toFixed(1)}%`;
      return h(
        "li",
        { "data-class": score.class_name },
        h("span", { class: "topk-name" }, score.class_name),
        h("span", { class: "topk-bar" }, fillBar),
        h("span", { class: "topk-value" }, percent(score.probability)),
      );
    }),
  );
}

// ---------------------------------------------------------------------------- drawing

function drawPanel(model) {
  const size = 280;
  const canvas = h("canvas", { id: "draw", width: size, height: size, "aria-label": "drawing area: draw with the mouse, a finger or a pen" });
  const context = canvas.getContext("2d");
  const bars = h("div", { id: "draw-result", "aria-live": "polite" });
  const error = messageArea();
  const clear = () => {
    context.fillStyle = "#000";
    context.fillRect(0, 0, size, size);
    fill(bars, h("p", { class: "muted" }, "Draw a digit (white on black, as MNIST's)."));
  };
  clear();

  let last = null;
  let inFlight = false;
  let again = false;
  let timer = null;

  async function run() {
    if (inFlight) {
      again = true;
      return;
    }
    const blob = await modelInput(canvas, model.input_shape);
    if (!blob) return;
    inFlight = true;
    try {
      const [prediction] = await predict(model, [[blob, "drawing.png"]]);
      fill(bars, topKBars(prediction));
      error.textContent = "";
    } catch (e) {
      error.textContent = e.message;
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        run();
      }
    }
  }
  const soon = () => {
    timer ??= setTimeout(() => {
      timer = null;
      run();
    }, PREDICT_EVERY_MS);
  };

  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [((event.clientX - box.left) * size) / box.width, ((event.clientY - box.top) * size) / box.height];
  };
  canvas.addEventListener("pointerdown", (event) => {
    canvas.setPointerCapture(event.pointerId);
    last = point(event);
    stroke(last, last);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!last) return;
    const next = point(event);
    stroke(last, next);
    last = next;
    soon();
  });
  const end = () => {
    if (!last) return;
    last = null;
    run();
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);

  function stroke(from, to) {
    context.strokeStyle = "#fff";
    context.lineWidth = size / 14;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.beginPath();
    context.moveTo(...from);
    context.lineTo(...to);
    context.stroke();
  }

  return h(
    "section",
    { class: "panel", "aria-labelledby": "draw-title" },
    h("h2", { id: "draw-title" }, "Draw"),
    h("div", { class: "draw" }, canvas, bars),
    h("button", { type: "button", class: "small", onclick: clear }, "Clear"),
    error,
  );
}

/**
 * The drawing as the model's input, prepared the way MNIST's digits were: the ink's bounding
 * box scaled to fit 20/28 of the input, then placed so that its centre of mass is at the
 * centre. A PNG of the input's height and width, or null when nothing is drawn.
 */
async function modelInput(canvas, [, height, width]) {
  const { data, width: w, height: hgt } = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let [x0, y0, x1, y1] = [w, hgt, -1, -1];
  for (let y = 0; y < hgt; y++) {
    for (let x = 0; x < w; x++) {
      if (data[4 * (y * w + x)] > 0) {
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null;
  const [bw, bh] = [x1 - x0 + 1, y1 - y0 + 1];
  const scale = (Math.min(height, width) * (20 / 28)) / Math.max(bw, bh);
  const [sw, sh] = [Math.max(1, Math.round(bw * scale)), Math.max(1, Math.round(bh * scale))];
  const small = new OffscreenCanvas(sw, sh);
  const sctx = small.getContext("2d");
  sctx.imageSmoothingQuality = "high";
  sctx.drawImage(canvas, x0, y0, bw, bh, 0, 0, sw, sh);
  const pixels = sctx.getImageData(0, 0, sw, sh).data;
  let [mass, mx, my] = [0, 0, 0];
  for (let y = 0; y < sh; y++) {
    for (let x = 0; x < sw; x++) {
      const v = pixels[4 * (y * sw + x)];
      mass += v;
      mx += v * (x + 0.5);
      my += v * (y + 0.5);
    }
  }
  const [cx, cy] = mass ? [mx / mass, my / mass] : [sw / 2, sh / 2];
  const out = new OffscreenCanvas(width, height);
  const octx = out.getContext("2d");
  octx.fillStyle = "#000";
  octx.fillRect(0, 0, width, height);
  octx.drawImage(small, Math.round(width / 2 - cx), Math.round(height / 2 - cy));
  return out.convertToBlob({ type: "image/png" });
}

// ---------------------------------------------------------------------------- uploads

function uploadPanel(model) {
  const input = h("input", { type: "file", id: "predict-files", multiple: true, accept: "image/png,image/jpeg" });
  const results = h("div", { id: "predict-results" });
  const error = messageArea();
  input.addEventListener("change", async () => {
    const files = [...input.files];
    if (!files.length) return;
    error.textContent = "";
    fill(results, h("p", { class: "muted" }, `Predicting ${files.length} image${files.length === 1 ? "" : "s"}…`));
    try {
      const predictions = await predict(model, files.map((f) => [f, f.name]));
      fill(
        results,
        table(
          ["Image", "File", "Class", "Probability", `Top ${TOP_K}`],
          predictions.map((p, i) => [
            h("img", { src: URL.createObjectURL(files[i]), alt: files[i].name, class: "thumb" }),
            files[i].name,
            h("strong", {}, p.class_name),
            percent(p.probability),
            p.top_k.map((s) => `${s.class_name} ${percent(s.probability)}`).join(", "),
          ]),
          { className: "predictions" },
        ),
      );
    } catch (e) {
      fill(results);
      error.textContent = e instanceof ApiError ? `Prediction refused: ${e.message}` : String(e);
    } finally {
      input.value = "";
    }
  });
  return h(
    "section",
    { class: "panel", "aria-labelledby": "upload-title" },
    h("h2", { id: "upload-title" }, "Predict images"),
    h("div", { class: "field" }, h("label", { for: "predict-files" }, "PNG or JPEG images, one or many"), input),
    error,
    results,
  );
}

// ---------------------------------------------------------------------------- evaluation

function evaluatePanel(model, datasets, available) {
  const panel = h("section", { class: "panel", "aria-labelledby": "eval-title", id: "evaluation" }, h("h2", { id: "eval-title" }, "Evaluate on a labelled dataset"));
  if (!available) {
    panel.append(h("p", { class: "muted" }, "This server has no evaluation endpoint (POST /models/{id}/evaluate)."));
    return panel;
  }
  const same = (d) => d.input_shape.join() === model.input_shape.join();
  const usable = datasets.filter(same);
  const select = h("select", { id: "eval-dataset" }, usable.map((d) => h("option", { value: d.id, selected: d.id === model.dataset_id }, `${d.name} (${d.n_samples} samples)`)));
  const button = h("button", { type: "button" }, "Evaluate");
  const error = messageArea();
  const output = h("div", { id: "eval-result" });
  button.addEventListener("click", async () => {
    error.textContent = "";
    button.disabled = true;
    fill(output, h("p", { class: "muted" }, "Evaluating…"));
    try {
      const response = await request(`/models/${model.id}/evaluate`, { method: "POST", json: { dataset_id: select.value } });
      fill(output, evaluation(await response.json(), select.value, model.input_shape));
    } catch (e) {
      fill(output);
      error.textContent = e.message;
    } finally {
      button.disabled = false;
    }
  });
  panel.append(
    usable.length
      ? h("div", { class: "inline" }, h("label", { for: "eval-dataset" }, "Dataset"), select, button)
      : h("p", {}, `No dataset has this model's input shape (${model.input_shape.join("×")}).`),
    error,
    output,
  );
  return panel;
}

/**
 * The evaluation of `datasetId` (whose samples have `inputShape`), with a clickable matrix.
 * `result` is POST /models/{id}/evaluate's answer: n_samples, accuracy, classes,
 * confusion_matrix (rows true, columns predicted), per_class, and `misclassified`:
 * [{true, predicted, indices}], per confused cell the first few samples (indices into the
 * dataset) whose images come from GET /datasets/{id}/samples?index=...
 */
function evaluation(result, datasetId, inputShape) {
  const samples = h("div", { id: "cell-samples", "aria-live": "polite" });
  const k = result.classes.length;
  const header = h("tr", {}, h("th", { scope: "col" }, "true ↓ / predicted →"), result.classes.map((c) => h("th", { scope: "col" }, c)));
  const rows = result.confusion_matrix.map((row, t) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, result.classes[t]),
      row.map((count, p) => {
        const cell = h(
          "button",
          {
            type: "button",
            class: `cell${t === p ? " diagonal" : ""}`,
            "data-true": t,
            "data-predicted": p,
            "aria-label": `${count} of class ${result.classes[t]} predicted as ${result.classes[p]}`,
            disabled: t === p || count === 0,
            onclick: () => showCell(t, p),
          },
          String(count),
        );
        const share = count / total;
        cell.style.backgroundColor = t === p ? `rgba(26, 127, 55, ${share})` : `rgba(209, 36, 47, ${Math.min(1, 2 * share)})`;
        if (share > 0.5) cell.classList.add("dark");
        return h("td", {}, cell);
      }),
    );
  });

  async function showCell(t, p) {
    const title = h("h3", {}, `True ${result.classes[t]}, predicted ${result.classes[p]}`);
    if (!Array.isArray(result.misclassified)) {
      fill(samples, title, h("p", { class: "muted" }, "This server's evaluation does not list the misclassified samples."));
      return;
    }
    const listed = result.misclassified.find((m) => m.true === t && m.predicted === p);
    const shown = (listed ? listed.indices : []).slice(0, MAX_SHOWN);
    const count = result.confusion_matrix[t][p];
    const query = shown.map((i) => `index=${i}`).join("&");
    const [tiles] = await sheetTiles(`/datasets/${datasetId}/samples?${query}`, inputShape, [shown.length]);
    tiles.forEach((tile, i) => tile.setAttribute("title", `sample ${shown[i]}`));
    fill(samples, title, h("p", { class: "muted" }, `${count} sample${count === 1 ? "" : "s"}${count > shown.length ? `, first ${shown.length} shown` : ""}`), h("div", { class: "tiles" }, tiles));
  }

  const perClass = table(
    ["class", "precision", "recall", "F1", "support"],
    result.per_class.map((c) => [c.class_name, fmt(c.precision, 3), fmt(c.recall, 3), fmt(c.f1, 3), fmt(c.support)]),
    { className: "per-class" },
  );
  return h(
    "div",
    {},
    h("p", { class: "big" }, `Accuracy ${percent(result.accuracy)} on ${fmt(result.n_samples)} samples (${k} classes)`),
    h("div", { class: "table-wrap" }, h("table", { class: "confusion", id: "confusion" }, h("thead", {}, header), h("tbody", {}, rows))),
    h("p", { class: "hint" }, "Rows: true class; columns: predicted. Click an off-diagonal cell to see its samples."),
    samples,
    perClass,
  );
}
