// The server: JSON calls, server-sent event streams, and what every view shares (streams, zones, lines, classes).

// What a 401 calls (the page shows its login): a session ends with a logout or a restart of the server.
let unauthorized = () => {};
export function onUnauthorized(handler) {
  unauthorized = handler;
}

// A refused call throws an Error whose `status` is the HTTP status (401: the page must show its login).
export async function call(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch(path, options);
  if (!reply.ok) {
    let detail = `${reply.status} ${reply.statusText}`;
    try { detail = (await reply.json()).detail || detail; } catch (_) { /* not JSON */ }
    if (reply.status === 401) unauthorized();
    throw Object.assign(new Error(typeof detail === "string" ? detail : JSON.stringify(detail)), { status: reply.status });
  }
  return reply.status === 204 ? null : reply.json();
}

export const get = (path) => call("GET", path);

// An EventSource of `kind` messages (JSON) to `onItem`; `close()` ends it. The browser reconnects by itself after
// a network error, never after a refusal (a 401 once a restart ended the session): then a call finds out which
// (a 401 shows the login) and, unless it was, the stream opens again. Either way a stream whose messages have ids
// says which it had last (Last-Event-ID; `after=` when opened again), and the server sends those it missed.
export function listen(path, kind, onItem) {
  let source = null;
  let timer = null;
  let closed = false;
  let last = "";
  const open = () => {
    source = new EventSource(last ? `${path}${path.includes("?") ? "&" : "?"}after=${encodeURIComponent(last)}` : path);
    source.addEventListener(kind, (message) => {
      last = message.lastEventId || last;
      onItem(JSON.parse(message.data));
    });
    source.addEventListener("error", () => {
      if (closed || source.readyState !== EventSource.CLOSED) return;
      get("/api/console").catch(() => {}).finally(() => { if (!closed) timer = setTimeout(open, 2000); });
    });
  };
  open();
  return { close() { closed = true; clearTimeout(timer); source.close(); } };
}

// What the views share, refreshed by `refresh()`. fleet: in a PostgreSQL-coordinated fleet, GET /api/cluster
// (every camera with the instance that runs it, every instance with its address); null for a lone instance.
export const state = { classes: [], timeZone: "UTC", streams: [], zones: [], lines: [], fleet: null };

export async function start() {
  const info = await get("/api/console");
  state.classes = info.classes;
  state.timeZone = info.time_zone;
  state.fleet = info.fleet ? {} : null;
  await refresh();
}

export async function refresh() {
  const [streams, zones, lines, fleet] = await Promise.all([get("/api/streams"), get("/api/zones"),
    get("/api/lines"), state.fleet && get("/api/cluster")]);
  state.streams = streams;
  state.zones = zones;
  state.lines = lines;
  if (fleet) state.fleet = fleet;
}

// The zones and lines that apply to one stream (`streams` null: every stream).
export function geometryOf(streamId) {
  const mine = (item) => item.streams === null || item.streams.includes(streamId);
  return { zones: state.zones.filter(mine), lines: state.lines.filter(mine) };
}

export function mediaUrl(event, suffix) {
  return `/api/media/${encodeURIComponent(event.stream_id)}/${event.event_id}${suffix}`;
}

// The view's parameters from the page's address: #events?stream=cam-1&event=ID -> {view, params}.
export function route() {
  const [path, query] = location.hash.slice(1).split("?");
  const [view, ...rest] = (path || "cameras").split("/");
  return { view, arg: rest.join("/") || null, params: new URLSearchParams(query || "") };
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}
