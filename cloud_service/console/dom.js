// Small DOM helpers: elements are built, never parsed from strings (no innerHTML with data).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let counter = 0;
/** A labelled control: <label for=id>text</label> + the control. */
export function field(text, control, hint) {
  const id = control.id || `f${++counter}`;
  control.id = id;
  const out = [h("label", { for: id }, text), control];
  if (hint) {
    const hintId = `${id}-hint`;
    control.setAttribute("aria-describedby", hintId);
    out.push(h("div", { id: hintId, class: "reasons" }, hint));
  }
  return h("div", {}, ...out);
}

export function select(name, values, chosen, labelOf = String) {
  return h("select", { name }, values.map((v) => h("option", { value: String(v), selected: String(v) === String(chosen) }, labelOf(v))));
}

export function when(ts) {
  if (!ts) return "—";
  return new Date(ts * 1000).toLocaleString();
}

export function status(text, kind = "") {
  const el = document.getElementById("status");
  replace(el, text ? h("p", { class: kind }, text) : "");
}

export function errorText(err) {
  return err && err.message ? err.message : String(err);
}

/** A message box in a view for an API error (role=alert: read out at once). */
export function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, errorText(err));
}

const REASON_WORDS = {
  "none": "",
  "media-empty": "out of paper",
  "media-needed": "paper needed",
  "media-jam": "paper jam",
  "media-low": "paper low",
  "toner-low": "toner low",
  "toner-empty": "out of toner",
  "marker-supply-low": "ink or toner low",
  "marker-supply-empty": "ink or toner empty",
  "door-open": "a door is open",
  "cover-open": "a cover is open",
  "paused": "paused",
  "offline-report": "the device is offline",
  "revoked": "the device's credentials were revoked",
  "moving-to-paused": "pausing",
  "job-completed-successfully": "completed",
  "job-canceled-by-user": "canceled by its owner",
  "job-canceled-by-operator": "canceled by an operator",
  "aborted-by-system": "aborted by the system",
  "document-format-error": "the device cannot read the document",
  "document-unprintable-error": "the document cannot be printed",
  "job-incoming": "waiting for the document",
  "job-queued": "queued",
  "job-printing": "printing",
  "job-scanning": "scanning",
  "job-transforming": "preparing",
  "job-fetchable": "waiting for the device",
  "printer-stopped": "the printer is stopped",
  "printer-stopped-partly": "the printer is partly stopped",
  "job-data-insufficient": "the document did not arrive",
  "unsupported-attribute-or-values": "the device does not support an option",
  "resources-are-not-ready": "the device is not ready",
  "service-off-line": "the service is offline",
};

/** State reasons in words: "media-empty-error" -> "out of paper (error)". */
export function reasonWords(reasons) {
  const out = [];
  for (const raw of reasons || []) {
    let key = raw;
    let severity = "";
    for (const s of ["-error", "-warning", "-report"]) {
      if (key.endsWith(s) && !(key in REASON_WORDS)) { key = key.slice(0, -s.length); severity = s.slice(1); }
    }
    const words = REASON_WORDS[key] ?? key.replaceAll("-", " ");
    if (words) out.push(severity && severity !== "report" ? `${words} (${severity})` : words);
  }
  return out.join("; ");
}

/** A state shown as a symbol and a word (never by colour alone). */
export function stateBadge(state, text) {
  return h("span", { class: `state state-${state}` }, text || state);
}
