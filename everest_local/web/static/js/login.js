// The login form. POST /api/auth/access_token sets the HttpOnly session cookie; this
// script never sees the token it carries.
import { api } from "./api.js";
import { clearError, showError } from "./ui.js";

const form = document.getElementById("login-form");

/** Where to go after logging in: a same-origin path from ?next=, else the catalogue. */
function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "";
  const safe = next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") &&
    !next.startsWith("/login");
  return safe ? next : "/apps";
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
