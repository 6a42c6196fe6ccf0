// The REST API from the browser. The session is the HttpOnly access_token cookie, sent by
// same-origin fetch; page scripts never see a token.

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
  }
}

const UNREACHABLE = "The server could not be reached. Check that it is running, then try again.";

/** /login with a "next" parameter that brings the user back here. */
export function loginUrl() {
  return "/login?" + new URLSearchParams({ next: location.pathname + location.search });
}

/** Path segments of an app id or "owner/alias", each percent-encoded, slash kept between. */
export function appSegments(ref) {
  return String(ref).split("/").filter(Boolean).map(encodeURIComponent).join("/");
}

export const appApiPath = (ref) => `/api/apps/${appSegments(ref)}`;
export const appPagePath = (ref) => `/apps/${appSegments(ref)}`;
export const jobApiPath = (id) => `/api/jobs/${encodeURIComponent(id)}`;
export const jobPagePath = (id) => `/jobs/${encodeURIComponent(id)}`;

async function errorMessage(resp) {
  const text = await resp.text().catch(() => "");
  try {
    const data = JSON.parse(text);
    if (data && typeof data.message === "string" && data.message) return data.message;
  } catch {
    // not JSON: fall through to the raw text
  }
  const plain = text.trim();
  if (plain && plain.length <= 300 && !plain.startsWith("<")) return plain;
  return `The server answered ${resp.status} ${resp.statusText}`.trim();
}

/**
 * fetch() a same-origin API path. Options: method, json (sent as JSON), body (sent as is),
 * redirectOn401 (default true: an expired session goes to the login page).
 * Resolves to the Response when it is 2xx; rejects with ApiError carrying the server's
 * {"message"} otherwise (status 0 when the server is unreachable).
 */
export async function api(path, { method = "GET", json, body, redirectOn401 = true } = {}) {
  const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (json !== undefined) {
    init.body = JSON.stringify(json);
    init.headers["Content-Type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch {
    throw new ApiError(0, UNREACHABLE);
  }
  if (resp.ok) return resp;
  if (resp.status === 401 && redirectOn401) {
    location.assign(loginUrl());
    const err = new ApiError(401, "Your session has ended; please log in again.");
    err.redirecting = true; // the page is leaving: nothing to show
    throw err;
  }
  throw new ApiError(resp.status, await errorMessage(resp));
}

/** api() and parse the JSON body (null for an empty body). */
export async function getJson(path, options) {
  const resp = await api(path, options);
  const text = await resp.text();
  return text ? JSON.parse(text) : null;
}

/** Upload one File to the caller's temporary files; resolves to its server URI. */
export async function uploadFile(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  const data = await getJson("/api/files/temp", { method: "POST", body: form });
  if (!data || typeof data.uri !== "string") {
    throw new ApiError(500, `The upload of ${file.name} returned no file URI.`);
  }
  return data.uri;
}
