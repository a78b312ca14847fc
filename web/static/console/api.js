// The admin API client (/api/v1, see /openapi.json): cookie session plus the CSRF header on
// every state change. Errors come back as {error: {code, message, field}}.

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message || code || "HTTP " + status);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

let csrfToken = sessionStorage.getItem("lc-csrf");

export function setCsrf(token) {
  csrfToken = token || null;
  if (token) sessionStorage.setItem("lc-csrf", token);
  else sessionStorage.removeItem("lc-csrf");
}

export async function api(method, path, body, { raw = false } = {}) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  const res = await fetch("/api/v1" + path, init);
  if (raw && res.ok) return res;
  let data = null;
  const text = await res.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch (_) {
      data = null;
    }
  }
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code, err.message || res.statusText, err.field);
  }
  return data;
}

export const get = (path) => api("GET", path);
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);
export const put = (path, body) => api("PUT", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

export function qs(params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== "") u.set(k, String(v));
  const s = u.toString();
  return s ? "?" + s : "";
}
