// A job's page: live state (polled about once a second until the job ends), info, inputs,
// results, log, cancel and delete. A job whose JSON carries a "session" object
// ({"url", "state"}: a JupyterLab session, issue 4) also gets an "Open JupyterLab" link.
import { api, appApiPath, appPagePath, getJson, jobApiPath } from "./api.js";
import { h, replaceChildren, safeHref } from "./dom.js";
import { clearError, initPage, showError, stateClass, TERMINAL_STATES } from "./ui.js";
import { valueList } from "./values.js";

const POLL_MS = 1000;
const HIDDEN_POLL_MS = 5000; // a tab nobody looks at asks less often
const MAX_BACKOFF_MS = 10000;

const main = document.getElementById("main");
const article = document.getElementById("job");
const id = main.dataset.job || "";
const el = (name) => document.getElementById(name);
const cancelButton = el("cancel");
const deleteButton = el("delete");

let app = null; // the application's description, for input/output titles
let appRequested = false;
let timer = null;
let inFlight = false;
let failures = 0;
let deleted = false;
let finished = false;
const shown = {}; // last rendered JSON of each section, so unchanged parts are left alone

function changed(key, value) {
  const text = JSON.stringify(value ?? null);
  if (shown[key] === text) return false;
  shown[key] = text;
  return true;
}

function renderInfo(job) {
  const appLabel = job.appName || job.appAlias || job.appId;
  const appRef = job.appId || job.appAlias;
  const rows = [
    ["Job id", h("code", {}, job.id)],
    ["Application", appRef ? h("a", { href: appPagePath(appRef) }, appLabel) : appLabel || "—"],
  ];
  if (job.info) {
    const text = typeof job.info === "string" ? job.info : JSON.stringify(job.info);
    rows.push(["Info", h("span", { class: "job-info-text" }, text)]);
  }
  replaceChildren(el("job-info"), rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function renderSession(job) {
  const box = el("session");
  const session = job.session;
  if (!session || typeof session !== "object") {
    box.hidden = true;
    return;
  }
  const href = safeHref(session.url);
  const ended = TERMINAL_STATES.has(job.state);
  const state = ended ? "ended" : session.state || (href ? "ready" : "starting");
  replaceChildren(box,
    h("h2", {}, "JupyterLab session"),
    h("p", {}, "Session ", h("strong", { class: "session-state" }, state), "."),
    href && !ended
      ? h("a", { href, target: "_blank", rel: "noopener", class: "button primary",
        id: "open-session" }, "Open JupyterLab")
      : null,
    !href && !ended ? h("p", { class: "muted" }, "The link appears when the notebook is up.")
      : null,
    workspaceLine(session.workspace));
  box.hidden = false;
}

/** What a session says of its workspace (its plugin's "workspace": {name, read_only,
 * report}): which one it opens, and once it ended, whether the final save was made. */
function workspaceLine(ws) {
  if (!ws || typeof ws !== "object" || !ws.name) return null;
  const name = h("strong", {}, String(ws.name));
  const report = ws.report && typeof ws.report === "object" ? ws.report : null;
  if (ws.read_only) return h("p", { id: "session-workspace" }, "Workspace ", name,
    " (a read-only copy: nothing is saved back).");
  if (!report) return h("p", { id: "session-workspace" }, "Workspace ", name,
    ": saved while the session runs, and at its end.");
  if (report.saved) return h("p", { id: "session-workspace" }, "Workspace ", name,
    ` saved at the end (${report.files ?? "?"} files).`);
  return h("p", { id: "session-workspace", class: "error", role: "alert" }, "Workspace ",
    name, ` was NOT saved at the end: ${report.error || "unknown"}. What was saved before `
    + "is kept.");
}

/** The inputs the user gave, then those the server filled in (e.g. the relay's ticket)
 * in a closed section, as on the form. */
function renderInputs(job) {
  const inputs = job.inputs || {};
  const specs = (app && app.inputs) || {};
  const byServer = (name) => (specs[name] || {}).filledByServer === true;
  const mine = Object.fromEntries(Object.entries(inputs).filter(([k]) => !byServer(k)));
  const filled = Object.fromEntries(Object.entries(inputs).filter(([k]) => byServer(k)));
  const nodes = [];
  if (Object.keys(mine).length) nodes.push(valueList(mine, specs, { id: "inputs" }));
  if (Object.keys(filled).length) {
    nodes.push(h("details", { class: "server-filled" },
      h("summary", {}, `Filled in by the server (${Object.keys(filled).length})`),
      valueList(filled, specs, { id: "inputs-server" })));
  }
  if (!nodes.length) nodes.push(h("p", { class: "muted" }, "No inputs."));
  replaceChildren(el("job-inputs"), ...nodes);
}

function renderResults(job) {
  const target = el("job-results");
  const result = job.result;
  if (result && typeof result === "object" && Object.keys(result).length) {
    replaceChildren(target, valueList(result, app && app.outputs, { id: "results" }));
  } else {
    const ended = TERMINAL_STATES.has(job.state);
    const text = ended
      ? (result && typeof result === "object" ? "This job has no results." : "No results.")
      : "Results appear when the job is done.";
    replaceChildren(target, h("p", { class: "muted" }, text));
  }
}

function render(job) {
  const terminal = TERMINAL_STATES.has(job.state);
  if (changed("name", job.name)) {
    el("job-name").textContent = job.name || job.id;
    document.title = `${job.name || job.id} · Everest local`;
  }
  const badge = el("job-state");
  badge.textContent = job.state || "UNKNOWN";
  badge.className = stateClass(job.state);
  if (changed("info", [job.id, job.appId, job.appName, job.appAlias, job.info])) renderInfo(job);
  if (changed("session", [job.session, job.state])) renderSession(job);
  if (changed("inputs", [job.inputs, !!app])) renderInputs(job);
  if (changed("results", [job.result, job.state, !!app])) renderResults(job);
  cancelButton.disabled = terminal;
  article.removeAttribute("aria-busy");
}

async function loadLog() {
  const pre = el("job-log");
  const resp = await api(`${jobApiPath(id)}/log`);
  const text = await resp.text();
  if (pre.textContent === text) return;
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = text || "(empty)";
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

async function loadApp(job) {
  appRequested = true;
  const ref = job.appId || job.appAlias;
  if (!ref) return;
  try {
    app = await getJson(appApiPath(ref));
  } catch {
    app = null; // titles are a nicety: the raw names are shown instead
  }
}

function schedule(ms) {
  clearTimeout(timer);
  timer = setTimeout(poll, ms);
}

async function poll() {
  if (inFlight || deleted) return;
  inFlight = true;
  try {
    const job = await getJson(jobApiPath(id));
    if (!appRequested) await loadApp(job);
    render(job);
    await loadLog();
    clearError();
    failures = 0;
    if (!TERMINAL_STATES.has(job.state)) schedule(document.hidden ? HIDDEN_POLL_MS : POLL_MS);
    else finished = true;
  } catch (err) {
    if (err.status === 404) {
      finished = true;
      el("job-name").textContent = "Job not found";
      article.removeAttribute("aria-busy");
      cancelButton.disabled = true;
      deleteButton.disabled = true;
      showError(err);
    } else if (!err.redirecting) {
      failures += 1;
      showError(err);
      schedule(Math.min(POLL_MS * 2 ** failures, MAX_BACKOFF_MS));
    }
  } finally {
    inFlight = false;
  }
}

cancelButton.addEventListener("click", async () => {
  cancelButton.disabled = true;
  try {
    await api(`${jobApiPath(id)}/cancel`, { method: "POST" });
    schedule(0);
  } catch (err) {
    showError(err);
    cancelButton.disabled = false;
  }
});

deleteButton.addEventListener("click", async () => {
  if (!window.confirm("Delete this job and its files?")) return;
  deleteButton.disabled = true;
  try {
    await api(jobApiPath(id), { method: "DELETE" });
    deleted = true;
    clearTimeout(timer);
    location.assign("/jobs");
  } catch (err) {
    showError(err);
    deleteButton.disabled = false;
  }
});

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && !finished && !deleted) schedule(0);
});

initPage();
poll();
