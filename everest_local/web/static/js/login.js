// The login form. POST /api/auth/access_token sets the HttpOnly session cookie; this
// script never sees the token it carries.
import { api } from "./api.js";
import { clearError, showError } from "./ui.js";

const form = document.getElementById("login-form");

/**
 * Where to go after logging in: a path of this origin from ?next=, else the catalogue.
 * The value is resolved as the browser would navigate to it (which drops tabs and newlines,
 * so "/\t/host/" means "//host/") and kept only if it stays on this origin.
 */
function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "";
  if (!next.startsWith("/") || /[\u0000-\u001f\u007f\\]/.test(next)) return "/apps";
  let url;
  try {
    url = new URL(next, location.origin);
  } catch {
    return "/apps";
  }
  if (url.origin !== location.origin || url.pathname.startsWith("/login")) return "/apps";
  return url.pathname + url.search + url.hash;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearError();
  const button = form.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    await api("/api/auth/access_token", {
      method: "POST",
      redirectOn401: false,
      json: {
        username: form.elements.username.value,
        password: form.elements.password.value,
        label: "web",
      },
    });
    location.assign(nextPath());
  } catch (err) {
    showError(err.status === 401 || err.status === 403
      ? new Error(err.message || "Wrong user name or password.")
      : err);
    button.disabled = false;
    form.elements.password.select();
  }
});
