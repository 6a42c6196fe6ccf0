// The caller's jobs, refreshed on demand and every few seconds while any is unfinished.
import { appPagePath, getJson, jobPagePath } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { clearError, initPage, showError, stateClass, TERMINAL_STATES } from "./ui.js";

const table = document.getElementById("jobs");
const body = table.querySelector("tbody");
const status = document.getElementById("jobs-status");
const refresh = document.getElementById("refresh");
const AUTO_REFRESH_MS = 3000;
let timer = null;

function row(job) {
  const app = job.appName || job.appAlias || job.appId || "";
  const appRef = job.appId || job.appAlias;
  return h("tr", { dataset: { job: job.id } },
    h("td", {}, h("a", { href: jobPagePath(job.id) }, job.name || job.id)),
    h("td", {}, appRef ? h("a", { href: appPagePath(appRef) }, app) : app),
    h("td", {}, h("span", { class: stateClass(job.state) }, job.state || "UNKNOWN")),
    h("td", {}, h("code", {}, job.id)));
}

async function load() {
  clearTimeout(timer);
  refresh.disabled = true;
  try {
    const jobs = (await getJson("/api/jobs")) || [];
    clearError();
    replaceChildren(body, jobs.map(row));
    table.hidden = jobs.length === 0;
    status.textContent = jobs.length
      ? `${jobs.length} job${jobs.length === 1 ? "" : "s"}.`
      : "No jobs yet. Pick an application to submit one.";
    if (jobs.some((job) => !TERMINAL_STATES.has(job.state))) timer = setTimeout(load, AUTO_REFRESH_MS);
  } catch (err) {
    showError(err);
  } finally {
    refresh.disabled = false;
  }
}

refresh.addEventListener("click", load);
initPage();
load();
