// Showing job inputs and results: file URIs as download links, numbers and text as text.
import { h, safeHref } from "./dom.js";

const FILE_PREFIX = "/api/files/";

/** The last path segment of a file URI, decoded, for the link text and download name. */
export function fileName(uri) {
  const last = String(uri).split("?")[0].split("/").filter(Boolean).pop() || "file";
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

function isFile(value, spec) {
  if (typeof value !== "string") return false;
  if (spec && spec.format === "uri") return true;
  return value.startsWith(FILE_PREFIX);
}

/** One value (any JSON) -> a node. spec: the input/output description, when known. */
export function renderValue(value, spec) {
  if (Array.isArray(value)) {
    const itemSpec = spec && spec.items;
    if (value.length === 0) return h("span", { class: "muted" }, "(empty list)");
    return h("ul", { class: "plain" }, value.map((v) => h("li", {}, renderValue(v, itemSpec))));
  }
  if (isFile(value, spec)) {
    const href = safeHref(value);
    const name = fileName(value);
    return href ? h("a", { href, download: name, class: "file" }, name) : h("code", {}, value);
  }
  if (value === null || value === undefined) return h("span", { class: "muted" }, "—");
  if (typeof value === "object") return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
  if (typeof value === "string" && (value.includes("\n") || value.length > 120)) {
    return h("pre", { class: "text" }, value);
  }
  if (typeof value === "boolean") return document.createTextNode(value ? "yes" : "no");
  return document.createTextNode(String(value));
}

/**
 * A <dl> of name -> value, titled from the description when there is one.
 * specs: the app's inputs or outputs object (may be null).
 */
export function valueList(values, specs, attrs = {}) {
  const list = h("dl", { class: "values", ...attrs });
  for (const [name, value] of Object.entries(values || {})) {
    const spec = specs && specs[name];
    const title = spec && spec.title && spec.title !== name ? spec.title : null;
    list.append(h("dt", { dataset: { name } }, title ? [title, " ", h("code", {}, name)] : h("code", {}, name)));
    list.append(h("dd", { dataset: { name } }, renderValue(value, spec)));
  }
  return list;
}
