// Every call the page makes to the service goes through this module. Errors come back in the
// API's own shape, {"error": {"code", "message"}}, and are thrown as ApiError so each page can
// show the message the service wrote.

const KEY_STORAGE = "song-detection.api-key";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

// Listeners told about every 401, so the page can ask for a key wherever the call came from.
const unauthorizedListeners = new Set();
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, "X-API-Key": key } : extra;
}

function url(path, query = {}) {
  const u = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") u.searchParams.set(name, value);
  }
  return u;
}

function errorOf(status, text) {
  try {
    const body = JSON.parse(text);
    if (body && body.error) return new ApiError(status, body.error.code, body.error.message);
  } catch {
    // not JSON: a proxy or the network answered, not the service
  }
  return new ApiError(status, "http_error", `the service answered HTTP ${status}`);
}

function failed(error) {
  if (error.status === 401) unauthorizedListeners.forEach((listener) => listener(error));
  throw error;
}

async function call(method, path, { query, json, accept } = {}) {
  let response;
  try {
    response = await fetch(url(path, query), {
      method,
      headers: headers({
        ...(json !== undefined ? { "Content-Type": "application/json" } : {}),
        ...(accept ? { Accept: accept } : {}),
      }),
      body: json !== undefined ? JSON.stringify(json) : undefined,
    });
  } catch {
    failed(new ApiError(0, "network_error", "the service cannot be reached"));
  }
  if (!response.ok) failed(errorOf(response.status, await response.text()));
  return response;
}

// Uploads go through XMLHttpRequest: fetch reports no upload progress.
function upload(path, { query, fields = {}, file, onProgress }) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value) form.append(name, value);
  }
  form.append("file", file, file.name || "recording");
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", url(path, query));
    for (const [name, value] of Object.entries(headers({ Accept: "application/json" }))) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.onprogress = (event) => {
      if (onProgress && event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve({ status: xhr.status, body: JSON.parse(xhr.responseText) });
      } else {
        try {
          failed(errorOf(xhr.status, xhr.responseText));
        } catch (error) {
          reject(error);
        }
      }
    };
    // The service closes the connection on an upload over its size limit, which some
    // browsers report as a network failure rather than the 413 it sent.
    xhr.onerror = () => reject(new ApiError(0, "network_error",
      "the upload failed before the service answered: the file may exceed the service's upload limit, or the service cannot be reached"));
    xhr.send(form);
  });
}

// --- catalogue -------------------------------------------------------------------------------

export async function listSongs({ q, limit, offset }) {
  return (await call("GET", "/songs", { query: { q, limit, offset } })).json();
}

export async function getSong(id) {
  return (await call("GET", `/songs/${encodeURIComponent(id)}`)).json();
}

export async function updateSong(id, fields) {
  return (await call("PATCH", `/songs/${encodeURIComponent(id)}`, { json: fields })).json();
}

export async function deleteSong(id) {
  await call("DELETE", `/songs/${encodeURIComponent(id)}`);
}

// Resolves to {status, body}: 201 for a new song, 200 when the audio was already indexed.
export function addSong(file, fields, onProgress) {
  return upload("/songs", { file, fields, onProgress });
}

// --- identify --------------------------------------------------------------------------------

export async function identify(file, onProgress) {
  const { body } = await upload("/identify", { file, query: { timeline: true }, onProgress });
  return body;
}

// --- streams ---------------------------------------------------------------------------------

export async function listStreams() {
  return (await call("GET", "/streams")).json();
}

export async function listPlays(stream, { from, to, limit, offset }) {
  const path = `/streams/${encodeURIComponent(stream)}/plays`;
  return (await call("GET", path, { query: { from, to, limit, offset } })).json();
}

// The whole log of a range as CSV: the API's pages, joined under one header line.
export async function playsCsv(stream, { from, to }) {
  const path = `/streams/${encodeURIComponent(stream)}/plays`;
  const limit = 10000;
  let text = "";
  for (let offset = 0; ; offset += limit) {
    const query = { from, to, limit, offset, format: "csv" };
    const response = await call("GET", path, { query, accept: "text/csv" });
    const page = await response.text();
    text += offset === 0 ? page : page.slice(page.indexOf("\n") + 1);
    if (offset + limit >= Number(response.headers.get("X-Total-Count") || 0)) return text;
  }
}
