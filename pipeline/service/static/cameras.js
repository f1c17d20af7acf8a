// Cameras: a grid of live previews with state, fps and latency; a large view of one; add, pause, resume, remove.

import { call, el, geometryOf, listen, refresh, state } from "./api.js";
import { clearPicture, drawPreview } from "./draw.js";

const GRID_WIDTH = 320;
const LARGE_WIDTH = 1280;
let previews = null;  // the open EventSource
let watching = "";    // what it watches: "<width>:<ids>"
let timer = null;

export function show(arg) {
  document.getElementById("grid").hidden = Boolean(arg);
  document.getElementById("add-camera").hidden = Boolean(arg);
  document.getElementById("large").hidden = !arg;
  render(arg);
  // a refresh answered after hide() (or another show()) draws nothing and opens no previews
  const mine = setInterval(() => refresh().then(() => timer === mine && render(arg)).catch(() => {}), 2000);
  timer = mine;
}

export function hide() {
  clearInterval(timer);
  timer = null;
  stopPreviews();
}

function stopPreviews() {
  if (previews) previews.close();
  previews = null;
  watching = "";
}

function watch(ids, width, onPreview) {
  const key = `${width}:${ids.join(",")}`;
  if (key === watching) return;
  stopPreviews();
  if (!ids.length) return;
  watching = key;
  const query = new URLSearchParams({ streams: ids.join(","), width });
  previews = listen(`/api/previews?${query}`, "preview", onPreview);
}

function render(arg) {
  if (arg) return renderLarge(arg);
  const grid = document.getElementById("grid");
  const ids = state.streams.map((s) => s.id);
  const elsewhere = (state.fleet?.cameras || []).filter((camera) => !ids.includes(camera.id));
  const shown = [...ids, ...elsewhere.map((camera) => camera.id)];
  for (const card of [...grid.children]) {
    if (!shown.includes(card.dataset.stream) || (card.dataset.elsewhere === "yes") !== !ids.includes(card.dataset.stream)) card.remove();
  }
  for (const stream of state.streams) {
    let card = grid.querySelector(`[data-stream="${CSS.escape(stream.id)}"]`);
    if (!card) {
      card = makeCard(stream.id);
      grid.append(card);
    }
    updateMeta(card, stream);
  }
  for (const camera of elsewhere) {
    let card = grid.querySelector(`[data-stream="${CSS.escape(camera.id)}"]`);
    if (!card) {
      card = el("div", { class: "camera elsewhere", "data-stream": camera.id, "data-elsewhere": "yes" },
        el("div", { class: "meta" }, el("span", { class: "name" }, camera.id), el("span", { class: "where muted" })));
      grid.append(card);
    }
    updateWhere(card.querySelector(".where"), camera);
  }
  const running = state.streams.filter((s) => s.state !== "paused").map((s) => s.id);
  watch(running, GRID_WIDTH, (preview) => {
    const canvas = grid.querySelector(`[data-stream="${CSS.escape(preview.stream_id)}"] canvas`);
    if (canvas) drawPreview(canvas, preview, geometryOf(preview.stream_id));
  });
}

function makeCard(id) {
  const canvas = el("canvas", { title: "open the large view", onclick: () => (location.hash = `#cameras/${id}`) });
  const meta = el("div", { class: "meta" },
    el("span", { class: "name" }, id), el("span", { class: "state" }), el("span", { class: "fps muted" }),
    el("span", { class: "latency muted" }),
    el("button", { class: "pause", onclick: () => togglePause(id) }, "Pause"),
    el("button", { class: "remove", onclick: () => remove(id) }, "Remove"));
  return el("div", { class: "camera", "data-stream": id }, canvas, meta, el("div", { class: "why" }));
}

function updateMeta(card, stream) {
  const badge = card.querySelector(".state");
  badge.textContent = stream.state;
  badge.className = `state ${stream.state}`;
  card.dataset.state = stream.state;
  card.querySelector(".fps").textContent = stream.state === "running" ? `${stream.fps.toFixed(1)} fps` : "";
  card.querySelector(".latency").textContent =
    stream.latency_s === null || stream.latency_s === undefined ? "" : `${Math.round(stream.latency_s * 1000)} ms`;
  card.querySelector(".pause").textContent = stream.state === "paused" ? "Resume" : "Pause";
  card.querySelector(".why").textContent = card.dataset.refused ||
    (stream.last_error && stream.state !== "running" ? stream.last_error : "");
}

// A camera of the fleet that another instance runs (a link to that instance's console), or that none runs.
function updateWhere(where, camera) {
  const instance = (state.fleet.instances || []).find((i) => i.name === camera.instance);
  where.replaceChildren(!camera.instance ? "not running: no instance has room for it"
    : instance?.url ? el("a", { href: `${instance.url}/#cameras/${encodeURIComponent(camera.id)}` }, `runs on ${camera.instance}`)
    : `runs on ${camera.instance}`);
}

function renderLarge(id) {
  const stream = state.streams.find((s) => s.id === id);
  document.getElementById("large-title").textContent = id;
  const badge = document.getElementById("large-state");
  const canvas = document.getElementById("large-canvas");
  if (!stream || canvas.dataset.stream !== id) clearPicture(canvas, id);  // not the last camera's picture
  if (!stream) {
    badge.textContent = "no such camera";
    return stopPreviews();
  }
  badge.className = `state ${stream.state}`;
  const latency = stream.latency_s === null ? "" : `, ${Math.round(stream.latency_s * 1000)} ms`;
  badge.textContent = `${stream.state}${stream.state === "running" ? `, ${stream.fps.toFixed(1)} fps${latency}` : ""}` +
    (stream.last_error && stream.state !== "running" ? `: ${stream.last_error}` : "");
  watch([id], LARGE_WIDTH, (preview) => drawPreview(canvas, preview, geometryOf(id)));
}

async function togglePause(id) {
  const stream = state.streams.find((s) => s.id === id);
  await change(id, "POST", `/api/streams/${encodeURIComponent(id)}/${stream.state === "paused" ? "resume" : "pause"}`);
}

async function remove(id) {
  if (!confirm(`Remove camera ${id}? It stops and is taken out of the config file.`)) return;
  await change(id, "DELETE", `/api/streams/${encodeURIComponent(id)}`);
}

// A change to one camera; a refusal (a zone still names it, ...) is shown on its card until the next change.
async function change(id, method, path) {
  const card = document.querySelector(`#grid [data-stream="${CSS.escape(id)}"]`);
  try {
    await call(method, path);
    card.dataset.refused = "";
  } catch (exc) {
    card.dataset.refused = exc.message;
  }
  await refresh();
  render(null);
}

export async function addCamera(form) {
  const data = Object.fromEntries(new FormData(form));
  const body = { id: data.id, url: data.url };
  if (data.lane) body.lane = data.lane;
  if (data.fps) body.fps = Number(data.fps);
  const error = document.getElementById("add-error");
  error.textContent = "";
  try {
    await call("POST", "/api/streams", body);
    form.reset();
    await refresh();
    render(null);
  } catch (exc) {
    error.textContent = exc.message;
  }
}
