// Small helpers to build the pages: elements, formatting, tables. Text always goes in as
// text nodes, never as HTML, so names from the API cannot inject markup.

/** h("p", {class: "x", onclick: fn}, "text", child): an element with attributes and children. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  element.append(...children.flat().filter((c) => c !== null && c !== undefined));
  return element;
}

export function fmt(value, digits = 4) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) ? value.toLocaleString("en") : value.toPrecision(digits);
}

export const percent = (value) =>
  value === null || value === undefined ? "–" : `${(100 * value).toFixed(1)}%`;

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

export const when = (iso) =>
  iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" }) : "–";

/** A table in a horizontally scrolling wrapper (usable on a phone). */
export function table(headers, rows, { className } = {}) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: className },
      h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell))))),
    ),
  );
}

export function progressBar(fraction, label) {
  return h("progress", { max: 1, value: fraction ?? 0, "aria-label": label });
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

/** A message area for an error, announced to screen readers. */
export function messageArea() {
  return h("p", { class: "error", role: "alert", "aria-live": "polite" });
}

/** Replace the children of `element` (children may be null). */
export function fill(element, ...children) {
  element.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return element;
}

/** The layer table of an architecture summary (POST /architectures/validate, a model). */
export function layerTable(summary) {
  const rows = summary.layers.map((layer) => [
    String(layer.index),
    layer.type,
    layer.output_shape.join(" × "),
    fmt(layer.param_count),
    fmt(layer.macs),
  ]);
  rows.push(["", "total", "", fmt(summary.param_count), fmt(summary.macs)]);
  return table(["#", "layer", "output shape", "parameters", "multiply-adds"], rows, {
    className: "layers",
  });
}
