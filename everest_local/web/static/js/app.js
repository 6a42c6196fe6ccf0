// An application's page: its description and the job form rendered from its inputs.
import { appApiPath, getJson, jobPagePath } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { buildInputs, kindLabel } from "./form.js";
import { renderMarkdown } from "./markdown.js";
import { clearError, initPage, showError } from "./ui.js";

const main = document.getElementById("main");
const article = document.getElementById("app");
const ref = (main.dataset.app || "").replace(/\/+$/, "");

function outputsSection(outputs) {
  const entries = Object.entries(outputs || {});
  if (!entries.length) return null;
  const list = h("dl", { class: "values" });
  for (const [name, spec] of entries) {
    const title = (spec && spec.title) || name;
    list.append(h("dt", {}, title, " ", h("code", {}, name)));
    const kind = kindLabel(spec || {});
    list.append(h("dd", {}, spec && spec.description
      ? [h("div", { class: "muted" }, kind), renderMarkdown(spec.description)]
      : h("span", { class: "muted" }, kind)));
  }
  return h("section", { "aria-labelledby": "outputs-h" },
    h("h2", { id: "outputs-h" }, "Outputs"), list);
}

// A picker of the resources this app may run on, when there is a choice ("" = the server's).
function resourceField(resources) {
  if (resources.length < 2) return null;
  return h("div", { class: "field", dataset: { input: "resources" } },
    h("label", { for: "job-resource" }, "Resource"),
    h("select", { id: "job-resource", name: "job-resource" },
      h("option", { value: "" }, "Default"),
      resources.map((r) => h("option", { value: r.id }, `${r.name} (${r.type})`))));
}

function jobForm(app, resources) {
  const { nodes, read } = buildInputs(app.inputs);
  const status = h("p", { class: "muted", "aria-live": "polite", id: "submit-status" });
  const submit = h("button", { type: "submit", class: "primary" }, "Submit job");
  const nameField = h("div", { class: "field" },
    h("label", { for: "job-name" }, "Job name"),
    h("input", { id: "job-name", name: "job-name", required: true,
      value: app.name || app.alias || "job" }));
  const hasRequired = Object.values(app.inputs || {})
    .some((s) => s && s.required === true && s.filledByServer !== true);
  const form = h("form", { id: "job-form", class: "stack" },
    hasRequired ? h("p", { class: "muted" }, "Inputs marked ",
      h("span", { class: "req", "aria-hidden": "true" }, "*"),
      h("span", { class: "visually-hidden" }, "with an asterisk"), " are required.") : null,
    nameField, nodes, resourceField(resources),
    h("div", { class: "actions" }, submit, status));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearError();
    submit.disabled = true;
    try {
      const inputs = await read((text) => { status.textContent = text; });
      status.textContent = "Submitting…";
      const body = { name: form.elements["job-name"].value, inputs };
      const picked = form.elements["job-resource"] && form.elements["job-resource"].value;
      if (picked) body.resources = [picked];
      const job = await getJson(appApiPath(app.id || ref), { method: "POST", json: body });
      status.textContent = "Submitted.";
      location.assign(jobPagePath(job.id));
    } catch (err) {
      status.textContent = "";
      showError(err);
      document.getElementById("error").scrollIntoView({ block: "center" });
      submit.disabled = false;
    }
  });
  return h("section", { "aria-labelledby": "form-h" },
    h("h2", { id: "form-h" }, "Submit a job"), form);
}

function render(app, resources) {
  document.title = `${app.name || ref} · Everest local`;
  const meta = [app.owner && app.alias ? `${app.owner}/${app.alias}` : app.alias,
    app.version && `version ${app.version}`, app.id && `id ${app.id}`].filter(Boolean);
  replaceChildren(article,
    h("h1", { id: "app-name" }, app.name || app.alias || ref),
    meta.length ? h("p", { class: "muted meta" }, meta.join(" · ")) : null,
    app.annotation ? h("p", { class: "lead" }, app.annotation) : null,
    app.description ? h("section", { class: "description", "aria-label": "Description" },
      renderMarkdown(app.description)) : null,
    jobForm(app, resources),
    outputsSection(app.outputs));
  article.removeAttribute("aria-busy");
}

initPage();
if (!ref) {
  showError(new Error("No application given."));
} else {
  const resources = getJson(`/api/resources?${new URLSearchParams({ app: ref })}`)
    .catch(() => []);
  Promise.all([getJson(appApiPath(ref)), resources])
    .then(([app, usable]) => render(app, Array.isArray(usable) ? usable : [])).catch((err) => {
    article.removeAttribute("aria-busy");
    document.getElementById("app-name").textContent =
      err.status === 404 ? "Application not found" : "Application unavailable";
    showError(err);
  });
}
