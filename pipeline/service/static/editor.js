// Zones and lines: drawn with the mouse on a camera's live preview, stored in source pixels, saved through the API.

import { call, el, geometryOf, listen, refresh, route, state } from "./api.js";
import { arrow, clearPicture, drawPreview, polygon } from "./draw.js";

const WIDTH = 960;
let points = [];   // source pixels
let previews = null;
let last = null;   // the last preview drawn
let shows = 0;     // which show() is the latest (hide() ends it)

export async function show() {
  const mine = ++shows;
  await refresh();  // the cameras as they are now: one may have been added or removed since the page opened
  if (mine !== shows) return;  // hidden meanwhile
  const select = document.getElementById("editor-stream");
  const wanted = route().arg;
  select.replaceChildren(...state.streams.map((s) => el("option", { value: s.id }, s.id)));
  if (wanted && state.streams.some((s) => s.id === wanted)) select.value = wanted;
  const classes = document.getElementById("editor-classes");
  classes.replaceChildren("counts: ", ...state.classes.map((name) =>
    el("label", {}, el("input", { type: "checkbox", name: "classes", value: name }), ` ${name} `)));
  points = [];
  start(select.value);
}

export function hide() {
  shows++;
  stop();
}

function stop() {
  if (previews) previews.close();
  previews = null;
}

function start(streamId) {
  stop();
  last = null;
  points = [];
  clearPicture(document.getElementById("editor-canvas"), streamId);  // clicks wait for this camera's picture
  renderExisting(streamId);
  if (!streamId) return;
  previews = listen(`/api/previews?streams=${encodeURIComponent(streamId)}&width=${WIDTH}`, "preview", (preview) => {
    last = preview;
    redraw();
  });
}

function shape() {
  return document.querySelector('#editor-form input[name="shape"]:checked').value;
}

function redraw() {
  if (!last) return;
  const canvas = document.getElementById("editor-canvas");
  drawPreview(canvas, last, geometryOf(last.stream_id), (ctx, scale) => {
    const scaled = points.map(([x, y]) => [x * scale, y * scale]);
    if (shape() === "line" && scaled.length === 2) arrow(ctx, scaled[0], scaled[1], "#ffffff");
    else polygon(ctx, scaled, "#ffffff", scaled.length >= 3);
  });
}

// A click on the canvas, whatever size it is drawn at, as source pixels.
export function clicked(event) {
  const canvas = event.currentTarget;
  if (!canvas.dataset.sourceWidth) return;
  const box = canvas.getBoundingClientRect();
  const x = ((event.clientX - box.left) / box.width) * Number(canvas.dataset.sourceWidth);
  const y = ((event.clientY - box.top) / box.height) * Number(canvas.dataset.sourceHeight);
  const point = [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  if (shape() === "line" && points.length >= 2) points = [];
  points.push(point);
  status(`${points.length} point${points.length > 1 ? "s" : ""}: ${points.map((p) => `(${p.join(", ")})`).join(" ")}`);
  redraw();
}

export function streamChanged(select) {
  history.replaceState(null, "", `#editor/${select.value}`);
  start(select.value);
}

// A name of an existing zone or line ticks its classes: redrawn, it keeps them unless the operator changes them.
export function nameChanged(form) {
  const known = state[shape() === "line" ? "lines" : "zones"].find((entry) => entry.name === form.elements.name.value);
  if (!known) return;
  for (const box of form.querySelectorAll('input[name="classes"]')) box.checked = (known.classes || []).includes(box.value);
}

export function undo() {
  points.pop();
  redraw();
}

export function clear() {
  points = [];
  redraw();
}

export async function save(form) {
  const streamId = form.elements.stream.value;
  const name = form.elements.name.value;
  const classes = [...form.querySelectorAll('input[name="classes"]:checked')].map((box) => box.value);
  let section, body;
  if (shape() === "line") {
    if (points.length !== 2) return status("a line needs two points: click its start, then its end", true);
    section = "lines";
    body = { name, streams: [streamId], start: points[0], end: points[1] };
  } else {
    if (points.length < 3) return status("a zone needs at least three corners", true);
    section = "zones";
    body = { name, streams: [streamId], polygon: points };
  }
  if (classes.length) body.classes = classes;
  // redrawn: it keeps its other settings and the other cameras it applies to (after asking: it moves there too)
  const known = state[section].find((entry) => entry.name === name);
  if (known) {
    const others = known.streams === null ? ["every camera"] : known.streams.filter((id) => id !== streamId);
    if (others.length && !confirm(`${section === "lines" ? "Line" : "Zone"} ${name} applies to ${others.join(", ")} ` +
      "too: the new one replaces it there as well. Save?")) return;
    const { classes: _, ...kept } = known;
    body = { ...kept, ...body, streams: known.streams && [...new Set([...known.streams, streamId])] };
  }
  try {
    await call("PUT", `/api/${section}/${encodeURIComponent(name)}`, body);
  } catch (exc) {
    return status(exc.message, true);
  }
  points = [];
  await refresh();
  renderExisting(streamId);
  const where = state.fleet ? "the fleet's database: every instance applies it" : "the config file";
  status(`saved ${section === "lines" ? "line" : "zone"} '${name}' (applied now, and written to ${where})`);
  redraw();
}

function renderExisting(streamId) {
  const { zones, lines } = geometryOf(streamId);
  const list = document.getElementById("editor-existing");
  const item = (section, entry, text) => el("li", {}, `${text} `,
    el("button", { onclick: () => removeEntry(section, entry.name, streamId) }, "Delete"));
  list.replaceChildren(
    ...zones.map((z) => item("zones", z, `zone ${z.name}: ${z.polygon.map((p) => `(${p.join(", ")})`).join(" ")}`)),
    ...lines.map((l) => item("lines", l, `line ${l.name}: (${l.start.join(", ")}) → (${l.end.join(", ")})`)));
}

async function removeEntry(section, name, streamId) {
  if (!confirm(`Delete ${section === "lines" ? "line" : "zone"} ${name}? It applies to every camera it names.`)) return;
  try {
    await call("DELETE", `/api/${section}/${encodeURIComponent(name)}`);
  } catch (exc) {
    return status(exc.message, true);
  }
  await refresh();
  renderExisting(streamId);
  redraw();
}

function status(text, error = false) {
  const line = document.getElementById("editor-status");
  line.textContent = text;
  line.className = error ? "error" : "muted";
}
