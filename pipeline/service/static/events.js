// Events: the stored ones, then each new one live; filters and the open event live in the address (#events?...).
// While the pointer is on the list, new events wait above it (rows never move under a click); leaving shows them.

import { el, get, listen, mediaUrl, refresh, route, state } from "./api.js";

const LIMIT = 200;
let live = null;
let shown = new Map();  // event_id -> event
let held = [];          // rows of new events that came while the pointer was on the list, oldest first
let shows = 0;          // which show() is the latest (hide() ends it): an earlier one's answers come too late

export async function show() {
  const mine = ++shows;
  await refresh();  // the cameras as they are now, for the filter
  if (mine !== shows) return;
  const { params } = route();
  const form = document.getElementById("event-filters");
  fillOptions(form.elements.stream, state.streams.map((s) => s.id), "every camera");
  fillOptions(form.elements.class, state.classes, "every class");
  for (const key of ["stream", "kind", "class"]) form.elements[key].value = params.get(key) || "";
  const list = document.getElementById("event-list");
  list.replaceChildren();
  shown = new Map();
  held = [];
  showHeldCount();
  const query = new URLSearchParams({ limit: LIMIT });
  for (const key of ["stream", "kind", "class"]) if (params.get(key)) query.set(key, params.get(key));
  live = listen("/api/events/live", "event", (event) => {
    if (matches(event, route().params)) add(event, true);
  });
  try {
    const stored = await get(`/api/events?${query}`);
    if (mine !== shows) return;
    for (const event of stored) add(event, false);
  } catch (exc) {
    if (mine !== shows) return;
    list.append(el("li", { class: "error" }, exc.message));
  }
  const open = params.get("event");
  if (open && shown.has(open)) select(shown.get(open));
}

export function hide() {
  shows++;
  if (live) live.close();
  live = null;
}

export function filtersChanged(form) {
  const params = new URLSearchParams();
  for (const key of ["stream", "kind", "class"]) if (form.elements[key].value) params.set(key, form.elements[key].value);
  location.hash = `#events?${params}`;
}

function fillOptions(select, values, all) {
  select.replaceChildren(el("option", { value: "" }, all), ...values.map((v) => el("option", { value: v }, v)));
}

function matches(event, params) {
  return (!params.get("stream") || event.stream_id === params.get("stream")) &&
    (!params.get("kind") || event.kind === params.get("kind")) &&
    (!params.get("class") || event.class_name === params.get("class"));
}

function describe(event) {
  const p = event.payload || {};
  const where = p.zone || p.line || "";
  const extra = p.direction ? ` ${p.direction}` : p.dwell_s !== undefined ? ` ${Number(p.dwell_s).toFixed(1)} s` : "";
  return `${event.kind} ${event.rule}${where && where !== event.rule ? ` (${where})` : ""}${extra}`;
}

function add(event, newest) {
  if (shown.has(event.event_id)) return;
  shown.set(event.event_id, event);
  const list = document.getElementById("event-list");
  const thumb = event.snapshot ? retryingImage(mediaUrl(event, ".jpg"), "snapshot") : el("div", { class: "noimg" });
  const time = new Date(event.wall_time).toLocaleTimeString([], { timeZone: state.timeZone });
  const item = el("li", { "data-event": event.event_id, "data-kind": event.kind, onclick: () => select(event) }, thumb,
    el("div", {}, el("div", {}, describe(event)),
      el("div", { class: "muted" }, `${event.stream_id} · ${event.class_name || "-"}` +
        `${event.track_id >= 0 ? ` #${event.track_id}` : ""} · ${time}`)));
  if (newest && list.matches(":hover")) {
    held.push(item);  // the list shows LIMIT rows at most: older ones held would only be trimmed (a pointer left there)
    if (held.length > LIMIT) shown.delete(held.shift().dataset.event);
    return showHeldCount();
  }
  if (newest) list.prepend(item); else list.append(item);
  trim(list);
}

// The new events held while the pointer was on the list (called when it leaves).
export function showHeld() {
  const list = document.getElementById("event-list");
  for (const item of held) list.prepend(item);
  held = [];
  showHeldCount();
  trim(list);
}

function showHeldCount() {
  document.getElementById("event-held").textContent =
    held.length ? `${held.length} new event${held.length > 1 ? "s" : ""} (shown when the pointer leaves the list)` : "";
}

function trim(list) {
  while (list.children.length > LIMIT) shown.delete(list.lastElementChild.dataset.event), list.lastElementChild.remove();
}

// An image whose file may not be written yet (a snapshot follows its event; a clip comes seconds later).
function retryingImage(src, cls, tries = 20) {
  const image = el("img", { class: cls, alt: "snapshot", loading: "lazy" });
  let left = tries;
  image.onerror = () => { if (left-- > 0) setTimeout(() => (image.src = `${src}?t=${Date.now()}`), 1000); };
  image.src = src;
  return image;
}

function select(event) {
  for (const li of document.querySelectorAll("#event-list li")) {
    li.classList.toggle("selected", li.dataset.event === event.event_id);
  }
  const params = route().params;
  if (params.get("event") !== event.event_id) {
    params.set("event", event.event_id);
    history.replaceState(null, "", `#events?${params}`);
  }
  const detail = document.getElementById("event-detail");
  detail.replaceChildren(el("h3", {}, describe(event)),
    el("p", { class: "muted" }, `${event.stream_id} · ${event.wall_time} · event ${event.event_id}`));
  if (event.clip) detail.append(clipPlayer(mediaUrl(event, ".mp4")));
  if (event.snapshot) detail.append(retryingImage(mediaUrl(event, ".jpg"), "large-snapshot"));
  detail.append(el("pre", {}, JSON.stringify(event.payload, null, 2)));
}

function clipPlayer(src) {
  const video = el("video", { controls: "", muted: "", playsinline: "", preload: "metadata", class: "clip" });
  let left = 30;
  video.onerror = () => { if (left-- > 0) setTimeout(() => (video.src = `${src}?t=${Date.now()}`), 1000); };
  video.src = src;
  return video;
}
