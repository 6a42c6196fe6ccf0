// A one-time sign-in link (`everest-jupyter ui`): the code is in the URL's fragment, which
// the browser never sends to the server, so it appears in no request line or log. It is
// posted once; the server sets the HttpOnly session cookie and forgets the code.
import { api } from "./api.js";
import { showError } from "./ui.js";

const code = location.hash.slice(1);
history.replaceState(null, "", location.pathname); // the used link leaves the address bar

async function signIn() {
  const status = document.getElementById("signin-status");
  if (!code) {
    status.textContent = "This link carries no sign-in code.";
    return;
  }
  try {
    await api("/api/auth/signin", { method: "POST", json: { code }, redirectOn401: false });
    location.replace("/apps");
  } catch (err) {
    status.textContent = "Not signed in.";
    showError(err);
  }
}

signIn();
