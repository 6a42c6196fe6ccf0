// The resources (and pools) the caller may use, as the server's resources file declares them.
import { getJson } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { initPage, showError } from "./ui.js";

const table = document.getElementById("resources");
const status = document.getElementById("resources-status");

function row(res) {
  const members = res.type === "pool" && Array.isArray(res.resources)
    ? ` (${res.resources.length} resources)` : "";
  return h("tr", { dataset: { resource: res.id } },
    h("td", {}, res.name), h("td", {}, res.type + members),
    h("td", {}, res.description || ""), h("td", {}, h("code", {}, res.id)));
}

initPage();
getJson("/api/resources").then((list) => {
  const items = Array.isArray(list) ? list : [];
  replaceChildren(table.querySelector("tbody"), items.map(row));
  table.hidden = items.length === 0;
  status.textContent = `${items.length} resource${items.length === 1 ? "" : "s"}.`;
}).catch((err) => {
  status.textContent = "";
  showError(err);
});
