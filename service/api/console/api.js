// The public API, called with the key kept in this tab's session storage. The console is
// served at <root>/console/, so the API's root is the folder above (a Serve route prefix,
// if any, included).
const ROOT = new URL("../", document.baseURI);
const KEY = "tuneserve.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (key) => (key ? sessionStorage.setItem(KEY, key) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.type = error.type || "http_error";
    this.param = error.param || null;
  }
}

// One call: JSON (or a FormData upload) in, JSON out; an error body becomes an ApiError.
export async function api(path, { method = "GET", json, form } = {}) {
  const headers = {};
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(new URL(path.replace(/^\//, ""), ROOT), { method, headers, body });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: { message: text.slice(0, 500) } };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Every page of a list (newest first), following `after`, up to `maxPages`.
export async function listAll(path, { limit = 100, maxPages = 20 } = {}) {
  const out = [];
  let after = null;
  for (let i = 0; i < maxPages; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=${limit}${after ? `&after=${after}` : ""}`);
    out.push(...page.data);
    if (!page.has_more || page.data.length === 0) break;
    after = page.data[page.data.length - 1].id;
  }
  return out;
}

export const enc = encodeURIComponent;
