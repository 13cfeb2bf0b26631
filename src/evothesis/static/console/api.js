// The console's one way to the server: the operators' JSON endpoints, as any API client
// calls them, with the session cookie in place of a bearer token and the CSRF token on
// every request that changes something.

const block = document.getElementById("console-context");
/** What the server told this page: its name, the client, the session's rights, the CSRF
 * token and the admin API's client models. */
export const context = block ? JSON.parse(block.textContent) : {};

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message);
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

function address(path, query) {
  if (!query) return path;
  const parameters = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") parameters.set(name, value);
  }
  const text = parameters.toString();
  return text ? `${path}?${text}` : path;
}

/** Back to sign-in, returning here afterwards: the session expired or its token changed. */
export function signInAgain() {
  const here = `${location.pathname}${location.search}`;
  location.assign(`/console/login?next=${encodeURIComponent(here)}&reason=ended`);
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const message = body?.error?.message || `${response.status} ${response.statusText}`;
  return new ApiError(response.status, body?.error?.code || "http_error", message, body);
}

/**
 * Call an endpoint; resolves to its JSON (or the Response itself with `raw`), rejects
 * with an ApiError carrying the server's own message. A 401 means the session is gone.
 */
export async function api(method, path, { json, query, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = context.csrf_token;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(address(path, query), {
    method,
    headers,
    body,
    credentials: "same-origin",
    cache: "no-store",
  });
  if (response.status === 401) {
    // The page is leaving for sign-in: whatever asked waits for nothing more.
    signInAgain();
    return new Promise(() => {});
  }
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, query) => api("GET", path, { query });
export const post = (path, json) => api("POST", path, { json });

/** A client id as a path segment. */
export const segment = (value) => encodeURIComponent(value);
