// Small DOM and formatting helpers shared by the pages.

// h("p", {class: "x", onclick: fn}, "text", child) builds an element; null children are skipped.
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    // Through the CSSOM: the page's Content-Security-Policy forbids inline style attributes.
    else if (name === "style") element.style.cssText = value;
    else if (name in element && typeof value !== "string") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

// Re-render without losing keyboard focus: the focused element's data-focus-key finds its
// replacement (the live view redraws every few seconds).
export function keepingFocus(render) {
  const key = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : null;
  render();
  if (!key) return;
  const again = document.querySelector(`[data-focus-key="${CSS.escape(key)}"]`);
  if (again && !again.disabled) again.focus();
}

// A status line for errors and confirmations; screen readers announce it.
export function message(container, text, kind = "error") {
  container.replaceChildren(
    h("p", { class: `message ${kind}`, role: kind === "error" ? "alert" : "status" }, text),
  );
}

export function errorText(error) {
  if (error && error.code) return `${error.message} (${error.code})`;
  return String(error && error.message ? error.message : error);
}

// 83.4 -> "1:23.4"; whole minutes for long spans.
export function clock(seconds, decimals = 1) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "";
  const sign = seconds < 0 ? "-" : "";
  const s = Math.abs(seconds);
  const hours = Math.floor(s / 3600);
  const minutes = Math.floor((s % 3600) / 60);
  const rest = (s % 60).toFixed(decimals).padStart(decimals ? 3 + decimals : 2, "0");
  return hours ? `${sign}${hours}:${String(minutes).padStart(2, "0")}:${rest}` : `${sign}${minutes}:${rest}`;
}

export function dateTime(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function timeOfDay(iso) {
  return new Date(iso).toLocaleTimeString(undefined, { timeStyle: "medium" });
}

export function percent(value, decimals = 1) {
  return `${(value * 100).toFixed(decimals)} %`;
}

// "12 s ago", "3 min ago", for the live view.
export function ago(iso, now = Date.now()) {
  const seconds = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (seconds < 90) return `${seconds} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} days ago`;
}

export function formatBytes(bytes) {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

// A drop zone over a file input: drag-and-drop and the keyboard-reachable picker alike.
export function dropZone({ label, multiple, accept, onFiles }) {
  const input = h("input", {
    type: "file",
    class: "visually-hidden",
    multiple,
    accept,
    onchange: () => {
      if (input.files.length) onFiles([...input.files]);
      input.value = "";
    },
  });
  const zone = h(
    "label",
    { class: "drop-zone" },
    input,
    h("span", { class: "drop-title" }, label),
    h("span", { class: "drop-hint" }, multiple ? "Drop files here, or press to choose" : "Drop a file here, or press to choose"),
  );
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("dragging");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const files = [...event.dataTransfer.files];
    if (files.length) onFiles(multiple ? files : files.slice(0, 1));
  });
  return { zone, input };
}

// A modal confirmation (a native <dialog>: focus is trapped and Escape cancels).
export function confirmDialog(text, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-text" },
      h("p", { id: "confirm-text" }, text),
      h(
        "form",
        { method: "dialog", class: "actions" },
        h("button", { value: "cancel", class: "secondary", autofocus: true }, "Cancel"),
        h("button", { value: "ok", class: "danger" }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
