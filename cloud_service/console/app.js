// The console's entry: who is signed in, the navigation, and which view the path names.

import { api, setCsrf, ApiError } from "./api.js";
import { h, replace, field, errorBox, status } from "./dom.js";
import { printersView, printView, jobsView, jobView, scanView, faxView } from "./views.js";
import { devicesView, adminView } from "./manage.js";

const view = document.getElementById("view");
let me = null;

const ROUTES = {
  "": printersView, "printers": printersView, "print": printView, "jobs": jobsView, "scan": scanView,
  "fax": faxView, "devices": devicesView, "admin": adminView,
};

/** Where to go after signing in: a path of this origin only (no open redirect via ?next=). */
function nextPath(next) {
  if (!next || !next.startsWith("/")) return "/";
  const url = new URL(next, location.origin);
  return url.origin === location.origin ? url.pathname + url.search : "/";
}

function loginView() {
  document.title = "Sign in · cloudimaging";
  const user = h("input", { type: "text", name: "user", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const message = h("div", { "aria-live": "assertive" });
  const form = h("form", { "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Sign in"),
    field("User name", user), field("Password", password),
    h("p", {}, h("button", { type: "submit" }, "Sign in")), message,
    h("p", { class: "reasons" }, "Scripts keep using API tokens (Authorization: Bearer); this sign-in is for the page."));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replace(message);
    try {
      await api("POST", "/session", { user: user.value, password: password.value }, { redirect: false });
      location.assign(nextPath(new URLSearchParams(location.search).get("next")));
    } catch (err) {
      replace(message, errorBox(err instanceof ApiError && err.status === 401 ? "Wrong user name or password." : err));
      password.focus();
    }
  });
  replace(view, form);
  user.focus();
}

function showNav(path) {
  const nav = document.getElementById("nav");
  nav.hidden = false;
  for (const li of nav.querySelectorAll("li[data-role]")) {
    const need = li.dataset.role;
    li.hidden = !(me.role === "admin" || (need === "owner" && me.role === "owner"));
  }
  for (const a of nav.querySelectorAll("a")) {
    const here = a.getAttribute("href").slice(1) === path.split("/")[1] || (path === "/" && a.getAttribute("href") === "/printers");
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  document.getElementById("who").hidden = false;
  replace(document.getElementById("who-name"), `${me.user} (${me.role})`);
}

export function navigate(path) {
  history.pushState({}, "", path);
  route();
}

async function route() {
  status("");
  const path = location.pathname;
  const [, first = "", second] = path.split("/");
  showNav(path);
  let render = ROUTES[first];
  let arg;
  if (first === "jobs" && second) { render = jobView; arg = decodeURIComponent(second); }
  else if ((first === "printers" || first === "devices") && second) arg = decodeURIComponent(second);
  if (!render) { replace(view, h("h1", {}, "Not found"), h("p", {}, "There is no such page.")); return; }
  replace(view, h("p", {}, "Loading…"));
  try {
    await render(view, { me, arg, navigate });
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;  // already on the way to the sign-in
    replace(view, h("h1", {}, "Cannot show this page"), errorBox(err));
  }
  view.focus({ preventScroll: true });
}

async function boot() {
  if (location.pathname === "/login") { loginView(); return; }
  try {
    me = await api("GET", "/session");
  } catch { return; }  // api() sent the browser to the sign-in
  setCsrf(me.csrf);
  document.getElementById("sign-out").addEventListener("click", async () => {
    try { await api("DELETE", "/session"); } finally { location.assign("/login"); }
  });
  document.addEventListener("click", (e) => {  // in-page links change the view without a reload
    const a = e.target.closest("a");
    if (!a || a.target || a.hasAttribute("download") || e.ctrlKey || e.metaKey || e.shiftKey) return;
    const url = new URL(a.href, location.href);
    if (url.origin !== location.origin || url.pathname.startsWith("/api/") || url.pathname.startsWith("/console/")) return;
    e.preventDefault();
    navigate(url.pathname + url.search);
  });
  window.addEventListener("popstate", route);
  await route();
}

boot();
