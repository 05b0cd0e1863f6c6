// The views every user has: services, print, jobs, one job, scan, fax.

import { api, upload, followJob } from "./api.js";
import { h, replace, field, select, when, errorBox, reasonWords, stateBadge, status } from "./dom.js";

const ENDED = ["completed", "canceled", "aborted"];
const KIND_TITLES = { print: "Printers", scan: "Scanners", faxout: "Fax services" };
const MEDIA_WORDS = { "iso_a4_210x297mm": "A4", "na_letter_8.5x11in": "Letter", "iso_a5_148x210mm": "A5",
  "na_legal_8.5x14in": "Legal", "iso_a3_297x420mm": "A3" };
const mediaWord = (m) => MEDIA_WORDS[m] ? `${MEDIA_WORDS[m]} (${m})` : m;

/** Refresh ``fn`` every ``ms`` while ``el`` stays on the page. */
function every(el, ms, fn) {
  const timer = setInterval(() => { if (!el.isConnected) clearInterval(timer); else fn().catch(() => {}); }, ms);
}

/** A service's state as a person reads it: revoked, offline since, or the state itself. */
export function serviceState(svc) {
  if ((svc.state_reasons || []).includes("revoked")) return { word: "revoked", cls: "revoked" };
  if (!svc.online) return { word: `offline since ${when(svc.last_seen)}`, cls: "offline" };
  return { word: svc.state, cls: svc.state };
}

function capsSummary(svc) {
  const c = svc.capabilities || {};
  const parts = [];
  if (svc.kind === "print") {
    if (c["sides-supported"]) parts.push(`sides: ${c["sides-supported"].join(", ")}`);
    if (c["print-color-mode-supported"]) parts.push(`colour: ${c["print-color-mode-supported"].join(", ")}`);
    if (c["media-supported"]) parts.push(`media: ${c["media-supported"].map((m) => MEDIA_WORDS[m] || m).join(", ")}`);
  } else if (svc.kind === "scan") {
    if (c["input-source-supported"]) parts.push(`sources: ${c["input-source-supported"].join(", ")}`);
    if (c["input-resolution-supported"]) parts.push(`resolutions: ${c["input-resolution-supported"].join(", ")} dpi`);
  }
  if (c["document-format-supported"]) parts.push(`formats: ${c["document-format-supported"].join(", ")}`);
  return parts.join(" · ");
}

// ------------------------------------------------------------------------ services

export async function printersView(view, { arg }) {
  document.title = "Printers · cloudimaging";
  const body = h("div", { "aria-live": "polite" });
  replace(view, h("h1", {}, arg ? `Service ${arg}` : "Printers, scanners and fax services"), body);
  const draw = async () => {
    const [{ services }, def] = await Promise.all([api("GET", "/services"), api("GET", "/me/default/print")]);
    const shown = arg ? services.filter((s) => s.name === arg) : services;
    if (arg && !shown.length) { replace(body, errorBox(`There is no service named ${arg} that you may use.`)); return; }
    const sections = [];
    for (const kind of ["print", "scan", "faxout"]) {
      const list = shown.filter((s) => s.kind === kind);
      if (!list.length) continue;
      sections.push(h("section", { "aria-labelledby": `k-${kind}` }, h("h2", { id: `k-${kind}` }, KIND_TITLES[kind]),
        h("div", { class: "cards" }, list.map((svc) => serviceCard(svc, def.service, draw)))));
    }
    replace(body, sections.length ? sections : h("p", {}, "No service is shared with you yet."));
  };
  await draw();
  every(body, 3000, draw);
}

/** A supply level in words: RFC 3805's -1/-2/-3 are "unavailable", "unknown", "some left". */
function levelWords(level) {
  if (level >= 0) return `${level}%`;
  return { [-1]: "unavailable", [-2]: "level unknown", [-3]: "some left" }[level] || "level unknown";
}

/** The printer's supplies as the device reported them (marker-*): a meter each, nothing invented. */
function suppliesList(svc) {
  const supplies = svc.supplies || [];
  if (!supplies.length) return "";
  return h("ul", { class: "supplies", "aria-label": `Supplies of ${svc.name}` },
    supplies.map((s) => {
      const waste = s.type.startsWith("waste-");
      const low = s.low_level ?? (waste ? null : 10);
      const high = s.high_level ?? (waste ? 90 : null);
      return h("li", { "data-supply": s.name },
        h("span", { class: "supply-name" }, s.name), " ",
        s.level >= 0
          ? h("meter", { min: 0, max: 100, value: s.level, low: waste ? null : low, high: waste ? high : null,
                          optimum: waste ? 0 : 100, "aria-label": `${s.name} ${s.level}%` }, `${s.level}%`)
          : "",
        " ", h("span", { class: "supply-level" }, levelWords(s.level)));
    }));
}

function serviceCard(svc, defaultPrinter, redraw) {
  const st = serviceState(svc);
  const reasons = reasonWords(svc.state_reasons.filter((r) => r !== "revoked" && r !== "offline-report"));
  const isDefault = svc.kind === "print" && svc.name === defaultPrinter;
  const actions = [];
  if (svc.kind === "print") {
    actions.push(h("a", { href: `/print?printer=${encodeURIComponent(svc.name)}` }, `Print on ${svc.name}`));
    if (!isDefault) {
      actions.push(h("button", { type: "button", class: "secondary", onclick: async () => {
        try { await api("PUT", "/me/default/print", { service: svc.name }); status(`${svc.name} is now your default printer.`, "ok"); await redraw(); }
        catch (err) { status(err.message, "error"); }
      } }, `Make ${svc.name} my default`));
    }
  } else if (svc.kind === "scan") actions.push(h("a", { href: `/scan?scanner=${encodeURIComponent(svc.name)}` }, `Scan on ${svc.name}`));
  else actions.push(h("a", { href: `/fax?service=${encodeURIComponent(svc.name)}` }, `Fax with ${svc.name}`));
  return h("article", { class: "card", "data-service": svc.name, "aria-labelledby": `svc-${svc.kind}-${svc.name}` },
    h("h3", { id: `svc-${svc.kind}-${svc.name}` }, svc.name, isDefault ? " (default)" : ""),
    h("p", {}, h("span", { class: "service-state", "data-state": st.cls }, stateBadge(st.cls, st.word)),
      reasons ? h("span", { class: "reasons" }, ` — ${reasons}`) : ""),
    svc.state_message ? h("p", { class: "reasons" }, svc.state_message) : "",
    h("p", { class: "reasons" }, [svc.make_and_model, svc.location].filter(Boolean).join(" · ")),
    h("p", { class: "reasons" }, capsSummary(svc)),
    suppliesList(svc),
    h("p", {}, `${svc.queued_jobs} job(s) queued`),
    h("p", { class: "inline" }, actions));
}

// ------------------------------------------------------------------------ print

function parseRanges(text) {
  const out = [];
  for (const part of text.split(",").map((p) => p.trim()).filter(Boolean)) {
    const m = /^(\d+)\s*(?:-\s*(\d+))?$/.exec(part);
    if (!m) throw new Error(`page ranges: "${part}" is not a page or a range like 2-5`);
    out.push([Number(m[1]), Number(m[2] || m[1])]);
  }
  return out;
}

function printOptions(svc) {
  const c = svc.capabilities || {};
  const controls = {};
  const parts = [];
  const copies = c["copies-supported"] || [1, 1];
  controls.copies = h("input", { type: "number", name: "copies", min: copies[0], max: copies[1], value: 1, required: true });
  parts.push(field("Copies", controls.copies, `${copies[0]} to ${copies[1]}`));
  if (c["sides-supported"]) {
    controls.sides = select("sides", c["sides-supported"], c["sides-default"] || "one-sided");
    parts.push(field("Sides", controls.sides));
  }
  if (c["media-supported"]) {
    controls.media = select("media", c["media-supported"], c["media-default"], mediaWord);
    parts.push(field("Paper size", controls.media));
  }
  if (c["print-color-mode-supported"]) {
    controls.color = select("print-color-mode", c["print-color-mode-supported"], c["print-color-mode-default"]);
    parts.push(field("Colour", controls.color));
  }
  if (c["page-ranges-supported"]) {
    controls.ranges = h("input", { type: "text", name: "page-ranges", placeholder: "all", inputmode: "numeric" });
    parts.push(field("Pages", controls.ranges, "empty for all pages, or e.g. 1-3, 5"));
  }
  const ticket = () => {
    const t = { copies: Number(controls.copies.value) };
    if (controls.sides) t.sides = controls.sides.value;
    if (controls.media) t.media = controls.media.value;
    if (controls.color) t["print-color-mode"] = controls.color.value;
    if (controls.ranges && controls.ranges.value.trim()) t["page-ranges"] = parseRanges(controls.ranges.value);
    return t;
  };
  return { parts, ticket };
}

function fileFormat(file) {
  if (file.type) return file.type;
  const ext = file.name.split(".").pop().toLowerCase();
  return { pdf: "application/pdf", txt: "text/plain", jpg: "image/jpeg", jpeg: "image/jpeg", png: "image/png" }[ext] || "application/octet-stream";
}

/** A drop zone with a file input: returns [element, () => the chosen file]. */
function filePicker(label) {
  let chosen = null;
  const input = h("input", { type: "file", name: "document" });
  const shown = h("p", { class: "chosen", "aria-live": "polite" }, "No file chosen.");
  const pick = (file) => { chosen = file; replace(shown, file ? `Chosen: ${file.name} (${file.size} bytes)` : "No file chosen."); };
  input.addEventListener("change", () => pick(input.files[0] || null));
  const zone = h("div", { class: "dropzone", id: "dropzone" }, h("p", {}, "Drop a file here, or choose one:"), field(label, input), shown);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer && e.dataTransfer.files.length) pick(e.dataTransfer.files[0]);
  });
  return [zone, () => chosen];
}

/** A job followed live (SSE) with its state, reasons, progress of pages and a cancel button. */
function liveJob(job) {
  const state = h("span", { class: "job-state" });
  const reasons = h("span", { class: "reasons" });
  const message = h("p", { class: "job-message" });
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel job");
  const box = h("section", { class: "live-job", "aria-labelledby": "live-title", "data-job": job.id },
    h("h2", { id: "live-title" }, "Job ", h("a", { href: `/jobs/${job.id}` }, `#${job.id}`)),
    h("p", { "aria-live": "polite" }, "State: ", state, " ", reasons), message, h("p", {}, cancel));
  const show = (j) => {
    replace(state, stateBadge(j.state));
    state.dataset.state = j.state;
    replace(reasons, reasonWords(j.state_reasons) ? `— ${reasonWords(j.state_reasons)}` : "");
    replace(message, j.state_message || "");
    if (ENDED.includes(j.state)) cancel.disabled = true;
  };
  cancel.addEventListener("click", async () => {
    try { show(await api("POST", `/jobs/${job.id}/cancel`)); } catch (err) { replace(message, errorBox(err)); }
  });
  show(job);
  followJob(job.id, show);
  return box;
}

export async function printView(view) {
  document.title = "Print · cloudimaging";
  const [{ services }, def] = await Promise.all([api("GET", "/services?kind=print"), api("GET", "/me/default/print")]);
  if (!services.length) { replace(view, h("h1", {}, "Print"), h("p", {}, "No printer is shared with you yet.")); return; }
  const wanted = new URLSearchParams(location.search).get("printer") || def.service || services[0].name;
  const printer = select("printer", services.map((s) => s.name), wanted,
    (n) => { const s = services.find((x) => x.name === n); return `${n} — ${serviceState(s).word}`; });
  const options = h("fieldset", {}, h("legend", {}, "Options this printer supports"));
  let current = null;
  const drawOptions = () => {
    const svc = services.find((s) => s.name === printer.value);
    current = printOptions(svc);
    replace(options, h("legend", {}, `Options ${svc.name} supports`), current.parts);
  };
  printer.addEventListener("change", drawOptions);
  drawOptions();
  const [zone, chosen] = filePicker("Document");
  const progress = h("progress", { max: 100, value: 0, "aria-label": "Upload progress" });
  const progressText = h("span", { class: "upload-text" });
  const message = h("div", { class: "print-message", "aria-live": "assertive" });
  const live = h("div");
  const submit = h("button", { type: "submit" }, "Print");
  const form = h("form", { "aria-labelledby": "print-title" }, h("h1", { id: "print-title" }, "Print"),
    field("Printer", printer), zone, options, h("p", {}, submit),
    h("p", {}, progress, " ", progressText), message);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(message); replace(live);
    const file = chosen();
    if (!file) { replace(message, errorBox("Choose or drop a file first.")); return; }
    let ticket;
    try { ticket = current.ticket(); } catch (err) { replace(message, errorBox(err)); return; }
    const name = printer.value;
    const format = fileFormat(file);
    submit.disabled = true;
    try {
      await api("POST", `/services/print/${encodeURIComponent(name)}/validate`, { ticket, document_format: format });
      replace(message, h("p", { class: "ok ticket-valid" }, "The printer accepts these options."));
      const job = await api("POST", "/jobs", { kind: "print", service: name, ticket, document_name: file.name.slice(0, 255),
        document_format: format, document_size: file.size, upload: true });
      await upload(job.upload_url, file, (sent, total) => {
        progress.value = Math.round((sent / total) * 100);
        replace(progressText, `${progress.value}% uploaded`);
      });
      progress.value = 100;
      replace(progressText, "uploaded");
      const closed = await api("POST", `/jobs/${job.id}/close`);
      replace(live, liveJob(closed));
    } catch (err) {
      replace(message, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  replace(view, form, live);
}

// ------------------------------------------------------------------------ jobs

export async function jobsView(view, { me }) {
  document.title = "Jobs · cloudimaging";
  const kind = select("kind", ["", "print", "scan", "faxout"], "", (k) => k || "all kinds");
  const stateFilter = select("state", ["", "active", ...ENDED], "", (s) => s || "any state");
  const ended = h("input", { type: "checkbox", name: "ended", checked: true });
  const text = h("input", { type: "text", name: "search", placeholder: "service or owner" });
  const table = h("div", { "aria-live": "polite" });
  const draw = async () => {
    const q = new URLSearchParams({ all: ended.checked ? "true" : "false" });
    if (kind.value) q.set("kind", kind.value);
    let { jobs } = await api("GET", `/jobs?${q}`);
    if (stateFilter.value === "active") jobs = jobs.filter((j) => !ENDED.includes(j.state));
    else if (stateFilter.value) jobs = jobs.filter((j) => j.state === stateFilter.value);
    const needle = text.value.trim().toLowerCase();
    if (needle) jobs = jobs.filter((j) => j.service.toLowerCase().includes(needle) || (j.owner || "").toLowerCase().includes(needle));
    jobs.sort((a, b) => b.id - a.id);
    replace(table, jobs.length ? h("table", {}, h("caption", {}, `${jobs.length} job(s)`),
      h("thead", {}, h("tr", {}, ["Job", "Kind", "Service", "Owner", "State", "Why", "Created", "Pages"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, jobs.map((j) => h("tr", { "data-job": j.id },
        h("td", {}, h("a", { href: `/jobs/${j.id}` }, `#${j.id}`)), h("td", {}, j.kind), h("td", {}, j.service),
        h("td", {}, j.owner || "—"), h("td", {}, stateBadge(j.state)),
        h("td", { class: "reasons" }, [reasonWords(j.state_reasons), j.state_message].filter(Boolean).join(" — ")),
        h("td", {}, when(j.created_at)), h("td", {}, String(j.impressions_completed))))))
      : h("p", {}, "No jobs match."));
  };
  for (const c of [kind, stateFilter, ended]) c.addEventListener("change", () => draw().catch((e) => replace(table, errorBox(e))));
  text.addEventListener("input", () => draw().catch((e) => replace(table, errorBox(e))));
  const ownerNote = me.role === "admin" ? "Everyone's jobs (you are an admin)." : "Your jobs.";
  replace(view, h("h1", {}, "Jobs"), h("p", {}, ownerNote),
    h("form", { class: "inline", role: "search", "aria-label": "Filter jobs", onsubmit: (e) => e.preventDefault() },
      field("Kind", kind), field("State", stateFilter), field("Search", text),
      h("div", {}, h("label", {}, ended, " include ended jobs"))), table);
  await draw();
  every(table, 4000, draw);
}

export async function jobView(view, { arg }) {
  if (!/^\d+$/.test(arg)) { replace(view, h("h1", {}, "Job"), errorBox("A job is named by its number.")); return; }
  document.title = `Job ${arg} · cloudimaging`;
  let job;
  try { job = await api("GET", `/jobs/${arg}`); }
  catch (err) { replace(view, h("h1", {}, `Job #${arg}`), errorBox(err)); return; }
  const head = h("div", { "aria-live": "polite" });
  const timeline = h("ol", { class: "timeline", "aria-label": "History" });
  const extra = h("div");
  const cancel = h("button", { type: "button", class: "secondary" }, "Cancel job");
  const draw = (j) => {
    const why = [reasonWords(j.state_reasons), j.state_message].filter(Boolean).join(" — ");
    replace(head, h("p", {}, "State: ", h("span", { class: "job-state", "data-state": j.state }, stateBadge(j.state)), why ? ` — ${why}` : ""),
      h("p", {}, `${j.kind} on ${j.service}${j.owner ? `, by ${j.owner}` : ""}; ${j.impressions_completed} impression(s)`),
      j.redacted ? h("p", {}, "Another user's job: only its state is shown.") : "");
    cancel.disabled = ENDED.includes(j.state) || j.redacted;
  };
  const drawFull = async () => {
    const j = await api("GET", `/jobs/${arg}`);
    draw(j);
    replace(timeline, (j.history || []).map((e) => h("li", {}, h("time", {}, when(e.at)), " ", stateBadge(e.state),
      e.state_reasons.length ? ` — ${reasonWords(e.state_reasons)}` : "", e.message ? ` — ${e.message}` : "")));
    const parts = [];
    if (j.destination_statuses) {
      parts.push(h("h2", {}, "Destinations"), h("table", { class: "destinations" },
        h("thead", {}, h("tr", {}, ["Number", "Status", "Why", "Attempts", "Pages sent"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, j.destination_statuses.map((d) => h("tr", { "data-destination": d["destination-uri"] },
          h("td", {}, d["destination-uri"]), h("td", {}, stateBadge(d["transmission-status"])),
          h("td", { class: "reasons" }, reasonWords(d["transmission-status-reasons"]) || "—"),
          h("td", {}, String(d.attempts ?? 0)), h("td", {}, String(d["images-completed"] ?? 0)))))));
    }
    if (j.kind === "scan" && j.state === "completed") parts.push(scanResult(j));
    replace(extra, parts);
  };
  cancel.addEventListener("click", async () => { try { draw(await api("POST", `/jobs/${arg}/cancel`)); } catch (err) { status(err.message, "error"); } });
  replace(view, h("h1", {}, `Job #${arg}`), head, h("p", {}, cancel), h("h2", {}, "History"), timeline, extra);
  await drawFull();
  if (!ENDED.includes(job.state) && !job.redacted) followJob(job.id, () => drawFull().catch(() => {}));
}

// ------------------------------------------------------------------------ scan

function scanResult(job) {
  const links = job.documents.map((d) => h("li", {}, h("a", { href: `/api/v1/jobs/${job.id}/documents/${d.number}`, download: d.name || `scan-${job.id}-${d.number}`, class: "download" },
    `Download ${d.name || `document ${d.number}`} (${d.format}, ${d.size ?? "?"} bytes)`)));
  const thumbs = h("div", { class: "thumbs" });
  const pdfs = job.documents.filter((d) => d.format === "application/pdf");
  for (const d of job.documents) {
    if (d.format.startsWith("image/")) thumbs.append(h("img", { src: `/api/v1/jobs/${job.id}/documents/${d.number}`, alt: `page ${d.number}` }));
  }
  for (const d of pdfs) pdfThumbs(job.id, d.number, pdfs.length > 1 ? ` of document ${d.number}` : "", thumbs);
  return h("section", { class: "scan-result" }, h("h2", {}, "Result"), h("ul", {}, links), thumbs);
}

// One thumbnail per page of a PDF: the first answer says how many pages there are (X-Page-Count),
// the others are then asked for as plain images (the service renders them small, once).
async function pdfThumbs(jobId, number, suffix, into) {
  const url = (n) => `/api/v1/jobs/${jobId}/documents/${number}/pages/${n}/thumbnail`;
  try {
    const first = await fetch(url(1), { credentials: "same-origin" });
    if (!first.ok) throw new Error(`HTTP ${first.status}`);
    const count = Math.min(Number(first.headers.get("X-Page-Count")) || 1, 200);
    for (let n = 1; n <= count; n += 1) into.append(h("img", { src: url(n), alt: `page ${n}${suffix}`, class: "thumb" }));
  } catch (err) {
    into.append(h("p", { class: "reasons" }, `No thumbnails of document ${number}: ${err.message}`));
  }
}

export async function scanView(view) {
  document.title = "Scan · cloudimaging";
  const { services } = await api("GET", "/services?kind=scan");
  if (!services.length) { replace(view, h("h1", {}, "Scan"), h("p", {}, "No scanner is shared with you yet.")); return; }
  const wanted = new URLSearchParams(location.search).get("scanner") || services[0].name;
  const scanner = select("scanner", services.map((s) => s.name), wanted);
  const options = h("fieldset", {});
  let read = () => ({});
  const drawOptions = () => {
    const c = services.find((s) => s.name === scanner.value).capabilities || {};
    const ctl = {};
    const parts = [h("legend", {}, "Scan settings")];
    const add = (attr, label, words) => {
      const values = c[`${attr}-supported`];
      if (!Array.isArray(values)) return;
      ctl[attr] = select(attr, values, c[`${attr}-default`], words);
      parts.push(field(label, ctl[attr]));
    };
    add("input-source", "Source", (v) => ({ platen: "glass (platen)", adf: "document feeder (adf)" }[v] || v));
    add("input-sides", "Sides");
    add("input-resolution", "Resolution", (v) => `${v} dpi`);
    add("input-color-mode", "Colour mode");
    add("input-media", "Size", mediaWord);
    add("document-format", "Format");
    replace(options, parts);
    read = () => {
      const t = {};
      for (const [attr, el] of Object.entries(ctl)) t[attr] = attr === "input-resolution" ? Number(el.value) : el.value;
      return t;
    };
  };
  scanner.addEventListener("change", drawOptions);
  drawOptions();
  const message = h("div", { "aria-live": "assertive" });
  const result = h("div", { "aria-live": "polite" });
  const submit = h("button", { type: "submit" }, "Scan");
  const form = h("form", { "aria-labelledby": "scan-title" }, h("h1", { id: "scan-title" }, "Scan"), field("Scanner", scanner), options,
    h("p", {}, submit), message);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(message); replace(result);
    submit.disabled = true;
    try {
      const ticket = read();
      await api("POST", `/services/scan/${encodeURIComponent(scanner.value)}/validate`, { ticket });
      const job = await api("POST", "/jobs", { kind: "scan", service: scanner.value, ticket });
      const state = h("span", { class: "job-state" });
      replace(result, h("p", {}, "Scan job ", h("a", { href: `/jobs/${job.id}` }, `#${job.id}`), ": ", state));
      followJob(job.id, (j) => { replace(state, stateBadge(j.state), j.state_message ? ` — ${j.state_message}` : ""); state.dataset.state = j.state; },
        async (j) => { submit.disabled = false; if (j.state === "completed") result.append(scanResult(await api("GET", `/jobs/${j.id}`))); });
    } catch (err) {
      replace(message, errorBox(err));
      submit.disabled = false;
    }
  });
  replace(view, form, result);
}

// ------------------------------------------------------------------------ fax

export async function faxView(view) {
  document.title = "Fax · cloudimaging";
  const { services } = await api("GET", "/services?kind=faxout");
  if (!services.length) { replace(view, h("h1", {}, "Fax"), h("p", {}, "No fax service is shared with you yet.")); return; }
  const wanted = new URLSearchParams(location.search).get("service") || services[0].name;
  const service = select("service", services.map((s) => s.name), wanted);
  const numbers = h("textarea", { name: "destinations", rows: 3, placeholder: "tel:+15551234567" });
  const [zone, chosen] = filePicker("Document");
  const message = h("div", { "aria-live": "assertive" });
  const live = h("div");
  const submit = h("button", { type: "submit" }, "Send fax");
  const form = h("form", { "aria-labelledby": "fax-title" }, h("h1", { id: "fax-title" }, "Fax"), field("Fax service", service),
    field("Destinations", numbers, "one tel: number per line, e.g. tel:+15551234567"), zone, h("p", {}, submit), message);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(message); replace(live);
    const file = chosen();
    const dests = numbers.value.split(/\s+/).map((s) => s.trim()).filter(Boolean).map((n) => (n.startsWith("tel:") ? n : `tel:${n}`));
    if (!file || !dests.length) { replace(message, errorBox("Give a document and at least one tel: number.")); return; }
    const ticket = { "destination-uris": dests.map((d) => ({ "destination-uri": d })) };
    submit.disabled = true;
    try {
      await api("POST", `/services/faxout/${encodeURIComponent(service.value)}/validate`, { ticket, document_format: fileFormat(file) });
      const job = await api("POST", "/jobs", { kind: "faxout", service: service.value, ticket, document_name: file.name.slice(0, 255),
        document_format: fileFormat(file), document_size: file.size, upload: true });
      await upload(job.upload_url, file, () => {});
      const closed = await api("POST", `/jobs/${job.id}/close`);
      replace(live, liveJob(closed), h("p", {}, "Per-destination status: ", h("a", { href: `/jobs/${job.id}` }, `job #${job.id}`)));
    } catch (err) {
      replace(message, errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  replace(view, form, live);
}
