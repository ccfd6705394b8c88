// The shell: hash routing between the pages, and the API key panel.
import { apiKey, onUnauthorized, setApiKey } from "./api.js";
import * as catalogue from "./catalogue.js";
import * as identify from "./identify.js";
import * as streams from "./streams.js";

const pages = { catalogue, identify, streams };
const main = document.getElementById("main");
const keyPanel = document.getElementById("key-panel");
const keyToggle = document.getElementById("key-toggle");
const keyInput = document.getElementById("key-input");
const keyReason = document.getElementById("key-reason");
let unmount = null;

function currentPage() {
  const name = window.location.hash.replace(/^#\/?/, "").split("/")[0];
  return pages[name] ? name : "catalogue";
}

function show() {
  if (unmount) unmount();
  const name = currentPage();
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${name[0].toUpperCase()}${name.slice(1)} · song-detection`;
  main.replaceChildren();
  unmount = pages[name].mount(main) || null;
}

function showKeyPanel(open, reason = "") {
  keyPanel.hidden = !open;
  keyToggle.setAttribute("aria-expanded", String(open));
  keyReason.textContent = reason;
  if (open) {
    keyInput.value = apiKey();
    keyInput.focus();
  }
}

// The skip link moves focus without touching the hash, which names the page.
document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault();
  main.focus();
});
keyToggle.addEventListener("click", () => showKeyPanel(keyPanel.hidden));
document.getElementById("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  setApiKey(keyInput.value.trim());
  showKeyPanel(false);
  show();
});
document.getElementById("key-forget").addEventListener("click", () => {
  setApiKey("");
  keyInput.value = "";
  showKeyPanel(false);
  show();
});
onUnauthorized((error) => {
  const reason = apiKey()
    ? `The service refused this API key: ${error.message}.`
    : "This service needs an API key.";
  showKeyPanel(true, reason);
});

window.addEventListener("hashchange", show);
show();
