// The views of device owners (devices, enrollment, shares, revocation) and of administrators.

import { api } from "./api.js";
import { h, replace, field, select, when, errorBox, status } from "./dom.js";
import { barChart } from "./chart.js";

function table(headers, rows, attrs = {}) {
  return h("table", attrs, h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows));
}

async function act(fn, done) {
  try { const out = await fn(); if (done) await done(out); return out; } catch (err) { status(err.message, "error"); return null; }
}

// ------------------------------------------------------------------------ devices (owners)

function enrollmentCommand(info, deviceId, code) {
  if (!info.ca_pem) return `cloudimaging manager enroll ${code} --url ${info.url} --config manager.json`;
  return `cat > ca.pem <<'PEM'\n${info.ca_pem.trim()}\nPEM\n` +
    `cloudimaging manager enroll ${code} --url ${info.url} --ca ca.pem --config manager.json`;
}

function shareBox(device, redraw) {
  const box = h("div", { class: "shares" });
  const who = select("principal-kind", ["user", "group", "everyone"], "user");
  const name = h("input", { type: "text", name: "principal", placeholder: "name" });
  const draw = async () => {
    const { shares } = await api("GET", `/devices/${encodeURIComponent(device.id)}/shares`);
    replace(box, shares.length ? h("ul", {}, shares.map((s) => h("li", { "data-share": s.id },
      `${s.kind === "everyone" ? "everyone" : `${s.kind} ${s.principal}`} — ${s.service === "*" ? "all services" : s.service} `,
      h("button", { type: "button", class: "secondary", "aria-label": `Remove the share with ${s.principal}`,
        onclick: () => act(() => api("DELETE", `/devices/${encodeURIComponent(device.id)}/shares/${s.id}`), draw) }, "Remove"))))
      : h("p", {}, "Not shared with anyone."),
    h("form", { class: "inline", "aria-label": `Share ${device.id}`, onsubmit: (e) => {
      e.preventDefault();
      const body = who.value === "everyone" ? { everyone: true } : { [who.value]: name.value.trim() };
      act(() => api("POST", `/devices/${encodeURIComponent(device.id)}/shares`, body), async () => { name.value = ""; await draw(); });
    } }, field("Share with", who), field("Name", name), h("div", {}, h("button", { type: "submit" }, "Share"))));
  };
  draw().catch((e) => replace(box, errorBox(e)));
  return box;
}

export async function devicesView(view, { me, arg }) {
  document.title = "Devices · cloudimaging";
  if (!["owner", "admin"].includes(me.role)) { replace(view, h("h1", {}, "Devices"), errorBox("Registering devices needs the owner role.")); return; }
  const info = await api("GET", "/enrollment-info");
  const id = h("input", { type: "text", name: "device_id", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._-]{0,63}" });
  const shown = h("div", { "aria-live": "polite" });
  const list = h("div", { "aria-live": "polite" });
  const draw = async () => {
    const { devices: all } = await api("GET", "/devices");
    const devices = arg ? all.filter((d) => d.id === arg) : all;
    replace(list, devices.length ? devices.map((d) => h("section", { class: "card device", "data-device": d.id, "aria-labelledby": `dev-${d.id}` },
      h("h3", { id: `dev-${d.id}` }, d.id),
      h("p", { class: "device-health" }, d.revoked_at ? h("span", { class: "state state-revoked" }, `revoked ${when(d.revoked_at)}`)
        : d.online ? h("span", { class: "state state-idle" }, "online") : h("span", { class: "state state-offline" }, `offline, last seen ${when(d.last_seen)}`)),
      h("p", { class: "reasons" }, `software: ${d.software || "—"} · services: ${d.services.join(", ") || "none yet"} · identity: ${d.auth} · registered ${when(d.registered_at)}`),
      h("h4", {}, "Shares"), shareBox(d, draw),
      h("p", { class: "inline" },
        h("button", { type: "button", class: "secondary", onclick: () => act(() => api("POST", `/devices/${encodeURIComponent(d.id)}/enrollment-codes`),
          (made) => showCode(d.id, made.enrollment_code, made.code_expires_at)) }, "New enrollment code"),
        d.revoked_at ? "" : h("button", { type: "button", class: "secondary", onclick: () => {
          if (!confirm(`Revoke ${d.id}? It will be cut off at once, and its jobs end.`)) return;
          act(() => api("POST", `/devices/${encodeURIComponent(d.id)}/revoke`, { reason: "revoked" }), async () => { status(`${d.id} revoked.`, "ok"); await draw(); });
        } }, `Revoke ${d.id}`))))
      : h("p", {}, "You have registered no device yet."));
  };
  const showCode = (deviceId, code, expires) => replace(shown, h("section", { class: "enrollment", "aria-labelledby": "enr-title" },
    h("h2", { id: "enr-title" }, `Enroll ${deviceId}`),
    h("p", {}, `Run this on the device (the code works once, until ${when(expires)}):`),
    h("pre", { class: "command", tabindex: 0, "aria-label": "Enrollment command" }, enrollmentCommand(info, deviceId, code)),
    info.ca_sha256 ? [h("p", {}, "The CA's SHA-256 fingerprint, to compare on the device (openssl x509 -in ca.pem -noout -fingerprint -sha256):"),
      h("p", {}, h("code", { class: "fingerprint" }, info.ca_sha256))] : "",
    h("p", {}, "Then start it: cloudimaging manager --config manager.json")));
  const form = h("form", { class: "inline", "aria-labelledby": "reg-title", onsubmit: (e) => {
    e.preventDefault();
    act(() => api("POST", "/devices", { device_id: id.value.trim() }), async (made) => { showCode(made.device.id, made.enrollment_code, made.code_expires_at); id.value = ""; await draw(); });
  } }, field("Device id", id), h("div", {}, h("button", { type: "submit" }, "Register")));
  replace(view, h("h1", {}, "Devices"), h("h2", { id: "reg-title" }, "Register a device"), form, shown, h("h2", {}, "Your devices"), list);
  await draw();
  const timer = setInterval(() => { if (!list.isConnected) clearInterval(timer); else draw().catch(() => {}); }, 3000);
}

// ------------------------------------------------------------------------ admin

function groupsEditor(u, redraw) {
  const input = h("input", { type: "text", name: `groups-${u.name}`, value: u.groups.join(", "), "aria-label": `Groups of ${u.name}` });
  return h("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    const groups = input.value.split(",").map((g) => g.trim()).filter(Boolean);
    act(() => api("PATCH", `/users/${encodeURIComponent(u.name)}`, { groups }), async () => { status(`Groups of ${u.name} saved.`, "ok"); await redraw(); });
  } }, input, h("button", { type: "submit", class: "secondary", "aria-label": `Save the groups of ${u.name}` }, "Save"));
}

async function usersSection() {
  const box = h("section", { "aria-labelledby": "users-title" });
  const name = h("input", { type: "text", name: "new-user", required: true });
  const role = select("role", ["user", "owner", "admin"], "user");
  const groups = h("input", { type: "text", name: "groups", placeholder: "lab, office" });
  const list = h("div");
  const draw = async () => {
    const { users } = await api("GET", "/users");
    replace(list, table(["Name", "Kind", "Role", "Groups", "Status", "Password", ""], users.map((u) => {
      const pw = h("input", { type: "password", name: `password-${u.name}`, autocomplete: "new-password", "aria-label": `New password for ${u.name}` });
      return h("tr", { "data-user": u.name }, h("td", {}, u.name), h("td", {}, u.kind), h("td", {}, u.role),
        h("td", {}, groupsEditor(u, draw)), h("td", {}, u.disabled ? "disabled" : "active"),
        h("td", {}, h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); act(() => api("PUT", `/users/${encodeURIComponent(u.name)}/password`, { password: pw.value }), () => { pw.value = ""; status(`Password set for ${u.name}.`, "ok"); }); } },
          pw, h("button", { type: "submit", class: "secondary" }, "Set"))),
        h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => act(() => api("PATCH", `/users/${encodeURIComponent(u.name)}`, { disabled: !u.disabled }), draw) },
          u.disabled ? `Enable ${u.name}` : `Disable ${u.name}`)));
    })));
  };
  replace(box, h("h2", { id: "users-title" }, "Users and groups"),
    h("form", { class: "inline", "aria-label": "Add a user", onsubmit: (e) => {
      e.preventDefault();
      act(() => api("POST", "/users", { name: name.value.trim(), role: role.value, groups: groups.value.split(",").map((g) => g.trim()).filter(Boolean) }),
        async () => { name.value = ""; groups.value = ""; await draw(); });
    } }, field("Name", name), field("Role", role), field("Groups", groups), h("div", {}, h("button", { type: "submit" }, "Add user"))), list);
  await draw();
  return box;
}

async function tokensSection() {
  const box = h("section", { "aria-labelledby": "tokens-title" });
  const user = h("input", { type: "text", name: "token-user", placeholder: "yourself" });
  const label = h("input", { type: "text", name: "token-label" });
  const made = h("div", { "aria-live": "polite" });
  const list = h("div");
  const draw = async () => {
    const { tokens } = await api("GET", "/tokens");
    replace(list, table(["Id", "User", "Label", "Created", "Expires", "Revoked", ""], tokens.map((t) => h("tr", { "data-token": t.id },
      h("td", {}, h("code", {}, t.id)), h("td", {}, t.user), h("td", {}, t.label || "—"), h("td", {}, when(t.created_at)),
      h("td", {}, t.expires_at ? when(t.expires_at) : "never"), h("td", {}, t.revoked_at ? when(t.revoked_at) : "—"),
      h("td", {}, t.revoked_at ? "" : h("button", { type: "button", class: "secondary", "aria-label": `Revoke token ${t.id}`,
        onclick: () => act(() => api("DELETE", `/tokens/${t.id}`), draw) }, "Revoke"))))));
  };
  replace(box, h("h2", { id: "tokens-title" }, "API tokens"),
    h("form", { class: "inline", "aria-label": "Make a token", onsubmit: (e) => {
      e.preventDefault();
      const body = { label: label.value || null };
      if (user.value.trim()) body.user = user.value.trim();
      act(() => api("POST", "/tokens", body), async (t) => {
        replace(made, h("p", { class: "ok" }, `Token for ${t.user} (shown once, copy it now): `, h("code", { class: "new-token" }, t.token)));
        await draw();
      });
    } }, field("For user", user), field("Label", label), h("div", {}, h("button", { type: "submit" }, "Make token"))), made, list);
  await draw();
  return box;
}

async function pricesSection() {
  const box = h("section", { "aria-labelledby": "prices-title" });
  const { services } = await api("GET", "/services?kind=print");
  const detail = h("div");
  const drawService = async (name) => {
    const base = `/services/print/${encodeURIComponent(name)}`;
    const [policy, { quotas }] = await Promise.all([api("GET", `${base}/policy`), api("GET", `${base}/quotas`)]);
    const price = h("input", { type: "number", name: "price", min: 0, value: policy.price_per_impression ?? "" });
    const retention = select("document-retention", ["", "discard-after-processing", "after-duration", "keep"], policy.document_retention || "", (v) => v || "service default");
    const quotaUser = h("input", { type: "text", name: "quota-user", placeholder: "* for each user" });
    const quotaLimit = h("input", { type: "number", name: "quota-limit", min: 0 });
    const quotaDays = h("input", { type: "number", name: "quota-days", min: 1, placeholder: "ever" });
    replace(detail,
      h("form", { class: "inline", "aria-label": `Price and retention of ${name}`, onsubmit: (e) => {
        e.preventDefault();
        const body = {};
        if (price.value !== "") body.price_per_impression = Number(price.value);
        if (retention.value) body.document_retention = retention.value;
        act(() => api("PUT", `${base}/policy`, body), () => status(`Policy of ${name} saved.`, "ok"));
      } }, field("Price per impression (credits)", price), field("Document retention", retention), h("div", {}, h("button", { type: "submit" }, "Save"))),
      table(["Quota for", "Impressions", "Period", ""], quotas.map((q) => h("tr", {}, h("td", {}, q.user), h("td", {}, String(q.impression_limit)),
        h("td", {}, q.period_days ? `${q.period_days} days` : "ever"),
        h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => act(() => api("DELETE", `${base}/quotas/${encodeURIComponent(q.user)}`), () => drawService(name)) }, "Remove"))))),
      h("form", { class: "inline", "aria-label": `Set a quota on ${name}`, onsubmit: (e) => {
        e.preventDefault();
        const body = { impression_limit: Number(quotaLimit.value) };
        if (quotaDays.value) body.period_days = Number(quotaDays.value);
        act(() => api("PUT", `${base}/quotas/${encodeURIComponent(quotaUser.value.trim() || "*")}`, body), () => drawService(name));
      } }, field("User", quotaUser), field("Impressions", quotaLimit), field("Days", quotaDays), h("div", {}, h("button", { type: "submit" }, "Set quota"))));
  };
  if (!services.length) { replace(box, h("h2", { id: "prices-title" }, "Prices and quotas"), h("p", {}, "No printers.")); return box; }
  const choice = select("policy-service", services.map((s) => s.name), services[0].name);
  choice.addEventListener("change", () => drawService(choice.value).catch((e) => replace(detail, errorBox(e))));
  replace(box, h("h2", { id: "prices-title" }, "Prices and quotas"), field("Printer", choice), detail);
  await drawService(choice.value).catch((e) => replace(detail, errorBox(e)));
  return box;
}

function sum(rows, key) {
  const out = new Map();
  for (const r of rows) out.set(r[key], (out.get(r[key]) || 0) + r.impressions);
  return [...out].map(([label, value]) => ({ label, value })).sort((a, b) => b.value - a.value);
}

async function accountingSection() {
  const box = h("section", { "aria-labelledby": "acct-title", class: "accounting" });
  const [{ accounting }, { jobs }] = await Promise.all([api("GET", "/accounting"), api("GET", "/jobs?all=true&kind=print&limit=5000")]);
  const days = new Map();
  for (const j of jobs) {
    if (!j.completed_at) continue;
    const day = new Date(j.completed_at * 1000).toISOString().slice(0, 10);
    days.set(day, (days.get(day) || 0) + j.impressions_completed);
  }
  const perDay = [...days].sort().map(([label, value]) => ({ label, value }));
  replace(box, h("h2", { id: "acct-title" }, "Accounting"),
    h("figure", { class: "chart-printers" }, barChart("Pages per service", sum(accounting, "service")), h("figcaption", {}, "Pages (impressions) per printer or scanner")),
    h("figure", { class: "chart-users" }, barChart("Pages per user", sum(accounting, "user")), h("figcaption", {}, "Pages per user")),
    h("figure", { class: "chart-days" }, barChart("Pages per day", perDay), h("figcaption", {}, "Pages per day (print jobs that ended)")),
    table(["User", "Service", "Jobs", "Completed", "Impressions", "Cost"], accounting.map((r) => h("tr", {},
      [r.user, r.service, r.jobs, r.completed_jobs, r.impressions, r.cost].map((v) => h("td", {}, String(v)))))));
  return box;
}

async function retentionSection() {
  const r = await api("GET", "/retention");
  const secs = (s) => (s ? `${Math.round(s / 3600 * 10) / 10} hours` : "kept");
  return h("section", { "aria-labelledby": "ret-title" }, h("h2", { id: "ret-title" }, "Retention"),
    h("p", {}, `Documents: ${r.document_retention}${r.document_retention === "after-duration" ? ` (${secs(r.document_retention_seconds)})` : ""}; ` +
      `job history: ${r.history_retention_seconds ? secs(r.history_retention_seconds) : "kept"}. Each printer's own policy is under Prices and quotas.`));
}

async function securitySection() {
  const { events } = await api("GET", "/security-log?limit=100");
  return h("section", { "aria-labelledby": "sec-title" }, h("h2", { id: "sec-title" }, "Security log (newest first)"),
    table(["When", "Event", "Outcome", "Who", "From", "Details"], events.map((e) => {
      const { ts, event, outcome, actor, client, ...rest } = e;
      return h("tr", {}, h("td", {}, when(ts)), h("td", {}, event), h("td", {}, outcome === "ok" ? "ok" : `✕ ${outcome}`), h("td", {}, actor || "—"),
        h("td", {}, client || "—"), h("td", { class: "reasons" }, Object.entries(rest).map(([k, v]) => `${k}=${v}`).join(" ")));
    }), { class: "security-log" }));
}

export async function adminView(view, { me }) {
  document.title = "Admin · cloudimaging";
  if (me.role !== "admin") { replace(view, h("h1", {}, "Admin"), errorBox("This needs the admin role.")); return; }
  const sections = h("div");
  replace(view, h("h1", {}, "Administration"), h("nav", { "aria-label": "Admin sections" }, h("ul", {},
    [["acct-title", "Accounting"], ["users-title", "Users"], ["tokens-title", "Tokens"], ["prices-title", "Prices and quotas"],
      ["ret-title", "Retention"], ["sec-title", "Security log"]].map(([id, t]) => h("li", {}, h("a", { href: `#${id}`, onclick: (e) => {
      e.preventDefault(); e.stopPropagation(); const el = document.getElementById(id); if (el) { el.scrollIntoView(); el.setAttribute("tabindex", "-1"); el.focus(); }
    } }, t))))), sections);
  for (const make of [accountingSection, usersSection, tokensSection, pricesSection, retentionSection, securitySection]) {
    try { sections.append(await make()); } catch (err) { sections.append(errorBox(err)); }
  }
}
