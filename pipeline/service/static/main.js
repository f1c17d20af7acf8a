// The console: log in when the API asks for it, then show the view the address names (#cameras, #events, ...).

import { call, onUnauthorized, route, start } from "./api.js";
import * as cameras from "./cameras.js";
import * as counts from "./counts.js";
import * as editor from "./editor.js";
import * as events from "./events.js";

const VIEWS = { cameras, events, editor, counts };
let current = null;

function showOnly(id) {
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== id;
}

function showLogin(message) {
  if (current) VIEWS[current].hide();
  current = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("login-error").textContent = message || "";
  showOnly("login");
  document.getElementById("token").focus();
}

// A session that ends while a view is open (a logout in another tab, a restart of the server): log in again.
onUnauthorized(() => {
  if (document.body.dataset.ready !== "1") return;
  delete document.body.dataset.ready;
  showLogin("the session ended: log in again");
});

async function navigate() {
  const { view, arg } = route();
  const name = VIEWS[view] ? view : "cameras";
  if (current) VIEWS[current].hide();
  current = name;
  for (const link of document.querySelectorAll("#nav a")) link.classList.toggle("active", link.dataset.view === name);
  showOnly(`view-${name}`);
  try {
    await VIEWS[name].show(arg);
  } catch (exc) {
    if (exc.status === 401) showLogin();
    else throw exc;
  }
}

async function open() {
  try {
    await start();
  } catch (exc) {
    if (exc.status === 401) return showLogin();
    throw exc;
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.body.dataset.ready = "1";
  await navigate();
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await call("POST", "/login", { token: document.getElementById("token").value });
  } catch (exc) {
    return showLogin(exc.status === 401 ? "wrong token" : exc.message);
  }
  document.getElementById("token").value = "";
  await open();
});
document.getElementById("logout").addEventListener("click", async () => {
  await call("POST", "/logout");
  delete document.body.dataset.ready;
  showLogin();
});
document.getElementById("add-form").addEventListener("submit", (event) => {
  event.preventDefault();
  cameras.addCamera(event.currentTarget);
});
document.getElementById("event-filters").addEventListener("change", (event) => events.filtersChanged(event.currentTarget));
document.getElementById("event-list").addEventListener("mouseleave", events.showHeld);
const editorForm = document.getElementById("editor-form");
editorForm.addEventListener("submit", (event) => {
  event.preventDefault();
  editor.save(event.currentTarget);
});
editorForm.addEventListener("input", (event) => {
  if (event.target.name === "name" || event.target.name === "shape") editor.nameChanged(editorForm);
});
document.getElementById("editor-stream").addEventListener("change", (event) => editor.streamChanged(event.currentTarget));
document.getElementById("editor-canvas").addEventListener("click", editor.clicked);
document.getElementById("editor-undo").addEventListener("click", editor.undo);
document.getElementById("editor-clear").addEventListener("click", editor.clear);
window.addEventListener("hashchange", () => {
  if (current) navigate();
});
open();
