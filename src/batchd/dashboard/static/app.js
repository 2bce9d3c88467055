// The dashboard's router: hash routes, the key prompt, and live refresh while a page is visible.

import { Unauthorized, forgetKey, storeKey, storedKey } from "./api.js";
import { batchView } from "./batch.js";
import { batchesView } from "./batches.js";
import { h } from "./dom.js";
import { fileView, filesView } from "./files.js";
import { upstreamsView } from "./upstreams.js";

const POLL_MS = 2000;
const ROUTES = [
  [/^\/?$/, batchesView],
  [/^\/batches\/([^/]+)$/, batchView],
  [/^\/files$/, filesView],
  [/^\/files\/([^/]+)$/, fileView],
  [/^\/upstreams$/, upstreamsView],
];

const main = document.getElementById("main");
const notice = document.getElementById("notice");
const liveMark = document.getElementById("live");
const forget = document.getElementById("forget");
let shown = 0; // bumps on every navigation, so a slow answer for an old page is dropped
let timer = null;
let due = false; // a refresh is owed but the page is hidden

function route() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const params = Object.fromEntries(new URLSearchParams(search ?? ""));
  for (const [pattern, view] of ROUTES) {
    const match = pattern.exec(path);
    if (match) return { view, params: { ...params, id: match[1] && decodeURIComponent(match[1]) } };
  }
  return { view: notFound, params };
}

async function notFound() {
  return { title: "Not found", nav: null, node: h("p", {}, "No such page."), live: false };
}

async function show(refresh = false) {
  const ticket = ++shown;
  clearTimeout(timer);
  due = false;
  try {
    const { view, params } = route();
    const page = await view(params);
    if (ticket !== shown) return;
    main.replaceChildren(page.node);
    document.title = `${page.title} · batchd`;
    markNav(page.nav);
    setNotice(null);
    liveMark.hidden = !page.live;
    if (page.live) schedule();
  } catch (error) {
    if (ticket !== shown) return;
    if (error instanceof Unauthorized) return askForKey();
    setNotice(error.message);
    if (!refresh) main.replaceChildren(h("p", { class: "muted" }, "Could not load this page."));
    schedule(); // a network blip or a restart: keep trying
  } finally {
    forget.hidden = !storedKey();
  }
}

function schedule() {
  timer = setTimeout(() => {
    if (document.hidden) due = true;
    else show(true);
  }, POLL_MS);
}

function markNav(name) {
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === name);
  }
}

function setNotice(text) {
  notice.hidden = !text;
  notice.textContent = text ?? "";
}

function askForKey() {
  const refused = storedKey() !== null;
  forgetKey();
  liveMark.hidden = true;
  const input = h("input", {
    id: "key",
    type: "password",
    name: "key",
    autocomplete: "off",
    required: true,
    placeholder: "sk-…",
  });
  const submit = (event) => {
    event.preventDefault();
    storeKey(input.value.trim());
    show();
  };
  main.replaceChildren(
    h(
      "form",
      { id: "key-form", class: "key", onsubmit: submit },
      h("h1", {}, "API key"),
      refused ? h("p", { class: "error", id: "key-refused" }, "That key was refused.") : null,
      h("p", {}, "This batchd needs an API key. It is kept in this tab's session storage only."),
      h("label", { for: "key" }, "Key "),
      input,
      h("button", { type: "submit" }, "Use key"),
    ),
  );
  input.focus();
}

forget.addEventListener("click", () => {
  forgetKey();
  show();
});
window.addEventListener("hashchange", () => show());
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && due) show(true);
});
show();
