// What every signed-in page shares: the user box, logout, and the error banner.
import { api, getJson } from "./api.js";

const errorBox = () => document.getElementById("error");

/** Show an error (an ApiError or any Error) in the page's alert banner. */
export function showError(err) {
  const box = errorBox();
  if (!box || (err && err.redirecting)) return;
  box.textContent = (err && err.message) || String(err);
  box.hidden = false;
}

export function clearError() {
  const box = errorBox();
  if (box) {
    box.hidden = true;
    box.textContent = "";
  }
}

/** Set up the header: the signed-in user's name and the logout button. */
export function initPage() {
  const logout = document.getElementById("logout");
  if (logout) {
    logout.addEventListener("click", async () => {
      try {
        await api("/api/auth/access_token", { method: "DELETE", redirectOn401: false });
      } catch (err) {
        if (err.status !== 401) {
          showError(err);
          return;
        }
      }
      location.assign("/login");
    });
  }
  getJson("/api/auth/access_token")
    .then((info) => {
      const name = info && (info.username || info.user);
      if (name) {
        document.getElementById("user-name").textContent = name;
        document.getElementById("user").hidden = false;
      }
    })
    .catch(showError);
}

/** "DONE" -> a CSS class for the state badge. */
export function stateClass(state) {
  return `state state-${String(state || "UNKNOWN").toLowerCase().replace(/[^a-z]/g, "")}`;
}

export { QUEUED_STATES, TERMINAL_STATES } from "./states.js";
