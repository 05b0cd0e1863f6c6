// The API as the page uses it: same origin, the session cookie, the CSRF token on every change.

let csrf = null;

export function setCsrf(token) { csrf = token; }

export class ApiError extends Error {
  constructor(status, body) {
    const detail = body && body.error ? body.error : null;
    let message = detail ? detail.message : `HTTP ${status}`;
    if (detail && detail.supported !== undefined && detail.supported !== null) {
      message += ` (supported: ${[].concat(detail.supported).join(", ")})`;
    }
    super(message);
    this.status = status;
    this.code = detail ? detail.code : null;
    this.attribute = detail ? detail.attribute : null;
  }
}

export function toLogin() {
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

export async function api(method, path, body, { redirect = true } = {}) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const response = await fetch(`/api/v1${path}`, {
    method, headers, credentials: "same-origin", body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) data = await response.json();
  if (response.status === 401 && redirect) { toLogin(); throw new ApiError(401, data); }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** PUT a file to a presigned URL with progress: onProgress(sent, total). */
export function upload(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
    xhr.addEventListener("load", () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { data = null; }
      if (xhr.status >= 200 && xhr.status < 300) resolve(data); else reject(new ApiError(xhr.status, data));
    });
    xhr.addEventListener("error", () => reject(new Error("the upload failed (network error)")));
    xhr.send(file);
  });
}

/** Follow a job over server-sent events until it ends; returns a function that stops. */
export function followJob(jobId, onJob, onEnd) {
  const source = new EventSource(`/api/v1/jobs/${jobId}/events`);
  let ended = false;
  source.addEventListener("job", (e) => {
    const job = JSON.parse(e.data);
    onJob(job);
    if (["completed", "canceled", "aborted"].includes(job.state)) { ended = true; source.close(); if (onEnd) onEnd(job); }
  });
  source.addEventListener("error", () => { if (ended) source.close(); });
  return () => source.close();
}
