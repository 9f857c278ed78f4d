// The dashboard's entry point: picks the page for the current path and draws it in <main>.

import { ApiError, rooted, showForgetButton } from "./api.js";
import { datasetsPage } from "./datasets.js";
import { h } from "./dom.js";
import { jobPage } from "./job.js";
import { jobsPage } from "./jobs.js";
import { modelPage, modelsPage } from "./model.js";

const ROUTES = [
  [/^\/$/, "jobs", jobsPage],
  [/^\/ui\/datasets\/?$/, "datasets", datasetsPage],
  [/^\/ui\/models\/?$/, "models", modelsPage],
  [/^\/ui\/jobs\/([\w-]+)$/, "jobs", jobPage],
  [/^\/ui\/models\/([\w-]+)$/, "models", modelPage],
];

async function main() {
  showForgetButton();
  const path = location.pathname.slice(rooted("").length) || "/";
  const view = document.getElementById("view");
  const route = ROUTES.find(([pattern]) => pattern.test(path));
  if (!route) {
    view.replaceChildren(h("h1", {}, "Page not found"), h("p", {}, h("a", { href: rooted("/") }, "Jobs")));
    return;
  }
  const [pattern, section, page] = route;
  for (const link of document.querySelectorAll("nav a[data-section]")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
  }
  try {
    await page(view, ...path.match(pattern).slice(1));
  } catch (error) {
    const message = error instanceof ApiError ? error.message : String(error);
    view.replaceChildren(h("h1", {}, "Could not load this page"), h("p", { class: "error" }, message));
  }
}

main();
