// The catalogue of applications, with search by name (?name= keeps a search linkable).
import { appPagePath, getJson } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { initPage, showError, clearError } from "./ui.js";

const list = document.getElementById("apps");
const status = document.getElementById("apps-status");
const form = document.getElementById("search");
const box = document.getElementById("search-name");

function card(app) {
  const ref = app.id || (app.owner && app.alias ? `${app.owner}/${app.alias}` : app.alias);
  const title = app.name || app.alias || ref;
  const alias = app.owner && app.alias ? `${app.owner}/${app.alias}` : app.alias;
  return h("li", { class: "card" },
    h("h2", {}, ref ? h("a", { href: appPagePath(ref) }, title) : title),
    alias && alias !== title ? h("p", { class: "muted" }, alias) : null,
    app.annotation ? h("p", {}, app.annotation) : null,
    Array.isArray(app.keywords) && app.keywords.length
      ? h("ul", { class: "tags", "aria-label": "Keywords" }, app.keywords.map((k) => h("li", {}, k)))
      : null);
}

async function load(name) {
  clearError();
  status.textContent = "Loading…";
  const path = name ? `/api/apps/search?${new URLSearchParams({ name })}` : "/api/apps";
  try {
    const data = await getJson(path);
    const apps = Array.isArray(data) ? data : [];
    replaceChildren(list, apps.map(card));
    const what = apps.length === 1 ? "1 application" : `${apps.length} applications`;
    status.textContent = name ? `${what} matching “${name}”.` : `${what}.`;
  } catch (err) {
    status.textContent = "";
    showError(err);
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const name = box.value.trim();
  const url = new URL(location.href);
  if (name) url.searchParams.set("name", name);
  else url.searchParams.delete("name");
  history.replaceState(null, "", url);
  load(name);
});

initPage();
box.value = new URLSearchParams(location.search).get("name") || "";
load(box.value.trim());
