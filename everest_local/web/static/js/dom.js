// Building DOM nodes without HTML strings: text always becomes text nodes, so user data
// (app descriptions, job inputs, logs) can never inject markup.

/**
 * Create an element. attrs: "class", "text", "dataset", on<event> listeners, true for
 * boolean attributes; null/undefined/false are skipped. children: nodes, strings, arrays.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  appendAll(el, children);
  return el;
}

/** Append nodes and strings (as text) to el, flattening arrays and skipping null/false. */
export function appendAll(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

/** Replace all children of el. */
export function replaceChildren(el, ...children) {
  el.replaceChildren();
  return appendAll(el, children);
}

/**
 * A link target that is safe to put in href: a same-origin path ("/x", not "//host") or an
 * http(s) URL. Anything else (javascript:, data:, ...) gives null.
 */
export function safeHref(url) {
  if (typeof url !== "string" || url === "") return null;
  if (url.startsWith("/") && !url.startsWith("//") && !url.startsWith("/\\")) return url;
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

let uniqueCounter = 0;
/** A document-unique id with the given readable prefix. */
export function uniqueId(prefix) {
  uniqueCounter += 1;
  return `${prefix.replace(/[^A-Za-z0-9_-]/g, "_")}-${uniqueCounter}`;
}
