"""The web console's side of the server: the page, live previews and events, event media, today's counts.

    GET /                       the page (static files in `static/`, no build step)
    GET /api/console            what the page needs to start: the model's classes, time zone, preview rate, fleet or not
    GET /api/previews?streams=a,b&width=320    server-sent events: a preview of each camera, a few per second
    GET /api/events/live        server-sent events: every event as it is published (the event JSON); a stream
                                that reconnects (Last-Event-ID, or ?after=ID) first gets those it missed
    GET /api/media/{stream}/{file}             an event's snapshot (.jpg, _crop.jpg) or clip (.mp4)
    GET /api/counts             today's line crossings and zone visits per camera (the console's time zone)

Previews are made only while a `/api/previews` request is open (`pipeline.service.previews`). Everything
but `/` and its static files needs the API's token or the console's session cookie (`pipeline.service.auth`).
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import threading
from collections import OrderedDict, deque
from datetime import datetime
from pathlib import Path
from typing import AsyncIterator, Callable
from zoneinfo import ZoneInfo

from fastapi import APIRouter, FastAPI, Header, HTTPException, Query
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from pipeline.config.models import ConsoleConfig
from pipeline.errors import SinkError
from pipeline.service.control import Control
from pipeline.service.previews import Previews
from pipeline.sinks.outputs.payload import event_to_json

STATIC = Path(__file__).parent / "static"
KEEPALIVE_S = 1.0
"""How often an idle server-sent event stream says it is alive (and notices the server stopping)."""
QUEUE_ITEMS = 256
RECENT_EVENTS = QUEUE_ITEMS
"""Events kept to replay to a live stream that reconnects after a gap (a network blip, a laptop asleep)."""
MEDIA_FILE = re.compile(r"^[0-9a-f]{24}(_crop)?\.(jpg|mp4)$")
MEDIA_TYPES = {"jpg": "image/jpeg", "mp4": "video/mp4"}
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Frame-Options": "DENY",
                "Content-Security-Policy": "frame-ancestors 'none'"}
"""The page is never shown in another site's frame, where a click on its buttons could be lured (clickjacking)."""


class Console:
    """The console of one pipeline: its previews (tapped from the frame sinks) and its live event feed."""

    def __init__(self, control: Control, config: ConsoleConfig):
        self.control, self.config = control, config
        runner = control.runner
        self.previews = Previews(runner.detector.class_names, config.preview_fps, config.preview_max_width)
        self._events: list[Callable] = []
        self._recent: deque[tuple[str, str]] = deque(maxlen=RECENT_EVENTS)  # (event id, JSON), oldest first
        self._lock = threading.Lock()
        self.closed = False
        runner.parts.outputs.add_tap(self.previews.tap)
        runner.parts.events.add_listener(self._publish)

    def listen(self, offer: Callable[[tuple[str, str]], None], after: str | None = None
               ) -> Callable[[tuple[str, str]], None]:
        """Call `offer((event id, event JSON))` for each event published from now on (on the publishing thread);
        the JSON is what the outputs send (`event_to_json`). after: the last event id a reconnecting stream had:
        first offer the recent events published since (all those kept when the id is not among them: delivery
        is at least once, the page drops those it has)."""
        with self._lock:
            if after is not None:
                ids = [event_id for event_id, _ in self._recent]
                for item in list(self._recent)[ids.index(after) + 1 if after in ids else 0:]:
                    offer(item)
            self._events.append(offer)
        return offer

    def unlisten(self, offer: Callable[[tuple[str, str]], None]) -> None:
        self._events.remove(offer)

    def _publish(self, events) -> None:
        # kept even while no page listens: the one whose stream just dropped asks for them when it reconnects
        items = []
        for event in events:
            try:
                items.append((event.event_id, event_to_json(event)))
            except SinkError:  # a payload that is not JSON: the outbox leaves it out too, and logs why
                continue
        with self._lock:
            self._recent.extend(items)
            offers = list(self._events)
        for offer in offers:
            for item in items:
                offer(item)

    def close(self) -> None:
        """Stop previews and end the open event streams (the server can then stop)."""
        self.closed = True
        runner = self.control.runner
        runner.parts.outputs.remove_tap(self.previews.tap)
        runner.parts.events.remove_listener(self._publish)
        self.previews.close()

    def collect(self):
        """Prometheus: previews encoded (0 while nobody watches) and the watchers now."""
        encoded = CounterMetricFamily("streamweave_preview_frames_encoded", "console previews encoded (JPEG); none "
                                      "while nobody watches")
        encoded.add_metric([], self.previews.encoded)
        viewers = GaugeMetricFamily("streamweave_preview_viewers", "open console preview streams")
        viewers.add_metric([], self.previews.viewers())
        yield from (encoded, viewers)


def mount(app: FastAPI, console: Console, authorized: list) -> None:
    """Serve the console on `app`: the page at /, its files under /console/, its API routes behind `authorized`."""
    app.mount("/console", StaticFiles(directory=STATIC), name="console")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    app.include_router(_router(console), dependencies=authorized)


def _router(console: Console) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["console"])
    runner = console.control.runner

    @api.get("/console")
    def start() -> dict:
        """The model's classes, the console's time zone and preview rate, this run's id, and whether this instance
        is one of a PostgreSQL-coordinated fleet (then the grid shows the fleet's other cameras from /api/cluster)."""
        return {"classes": list(runner.detector.class_names), "time_zone": console.config.time_zone,
                "preview_fps": console.config.preview_fps, "preview_max_width": console.config.preview_max_width,
                "run_id": runner.parts.run.run_id, "fleet": console.control.fleet is not None}

    @api.get("/previews")
    async def previews(streams: str = Query(description="stream ids, comma-separated"),
                       width: int = Query(320, ge=16, le=7680, description="preview width in pixels")):
        """Server-sent events `preview`: JSON with the frame's size, boxes (source pixels) and the JPEG in
        base64, for each listed camera at most `console.preview_fps` a second, while this request is open. A
        viewer that reads slower is sent the newest picture of each camera, never a backlog."""
        wanted = {sid: width for sid in streams.split(",") if sid}
        if not wanted:
            raise HTTPException(400, "streams: name at least one stream id, e.g. ?streams=cam-1,cam-2")

        def encode(preview) -> str:
            data = {**preview.meta(), "jpeg": base64.b64encode(preview.jpeg).decode()}
            return f"event: preview\ndata: {json.dumps(data)}\n\n"

        return _sse(console, lambda offer: console.previews.watch(wanted, offer), console.previews.unwatch, encode,
                    newest_of=lambda preview: preview.stream_id)

    @api.get("/events/live")
    async def live_events(last_event_id: str | None = Header(None),
                          after: str | None = Query(None, description="the last event id had (as Last-Event-ID)")):
        """Server-sent events `event`: each event as the webhook has it, as it is published (not stored first;
        its snapshot may take a moment to be written). A stream that reconnects (the browser sends Last-Event-ID)
        first gets the events published since that one, of the last RECENT_EVENTS."""
        since = last_event_id or after
        return _sse(console, lambda offer: console.listen(offer, since), console.unlisten,
                    lambda item: f"event: event\nid: {item[0]}\ndata: {item[1]}\n\n")

    @api.get("/media/{stream_id}/{name}")
    def media(stream_id: str, name: str) -> FileResponse:
        """An event's snapshot (`<event_id>.jpg`), object crop (`<event_id>_crop.jpg`) or clip (`<event_id>.mp4`)
        from the media sink's directory."""
        directory = _media_directory(runner.config.sinks)
        if not MEDIA_FILE.match(name) or stream_id in (".", "..") or "/" in stream_id:
            raise HTTPException(404, f"no media file '{stream_id}/{name}'")
        path = directory / stream_id / name
        if not path.is_file():
            raise HTTPException(404, f"no media file '{stream_id}/{name}' (yet: a clip is written after its event)")
        return FileResponse(path, media_type=MEDIA_TYPES[name.rsplit(".", 1)[1]])

    @api.get("/counts")
    def counts() -> dict:
        """Today (from midnight in `console.time_zone`) per camera: crossings per line, direction and class, over
        every run; zone visits begun per zone and class, and those of this run still inside."""
        return _counts(console, runner)

    return api


def _sse(console: Console, subscribe, unsubscribe, encode, newest_of=None) -> StreamingResponse:
    """A server-sent event stream of what `subscribe(offer)` offers from other threads, until the client
    goes or the console closes; `encode(item)` is its text. A client that falls behind loses the oldest of
    the QUEUE_ITEMS items it is owed; with `newest_of(item)` (a key: a preview's camera) it is owed only the
    newest item of each key, which replaces the one it has not been sent yet."""
    loop = asyncio.get_running_loop()
    owed: OrderedDict = OrderedDict()  # key -> item, oldest first
    arrived = asyncio.Event()
    numbers = itertools.count()

    def put(item) -> None:
        key = next(numbers) if newest_of is None else newest_of(item)
        owed.pop(key, None)
        owed[key] = item
        if len(owed) > QUEUE_ITEMS:
            owed.popitem(last=False)
        arrived.set()

    def offer(item) -> None:
        try:
            loop.call_soon_threadsafe(put, item)
        except RuntimeError:  # the server's loop has closed
            pass

    async def stream() -> AsyncIterator[str]:
        handle = subscribe(offer)
        try:
            yield "retry: 2000\n\n"
            while not console.closed:
                if not owed:
                    arrived.clear()
                    try:
                        await asyncio.wait_for(arrived.wait(), KEEPALIVE_S)
                    except asyncio.TimeoutError:
                        yield ": alive\n\n"
                    continue
                yield encode(owed.popitem(last=False)[1])
        finally:
            unsubscribe(handle)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _media_directory(sinks) -> Path:
    media = next((sink for sink in sinks if sink.type == "media"), None)
    if media is None:
        raise HTTPException(404, "no media: add a `type: media` sink under `sinks:` for snapshots and clips")
    return Path(media.directory).absolute()


def _counts(console: Console, runner) -> dict:
    from pipeline.sinks.storage.answers import Buckets, Filters, line_counts, parse_time, zone_counts  # noqa: PLC0415
    from pipeline.sinks.storage.query import ALL_RUNS, storage_target  # noqa: PLC0415

    target = storage_target(runner.config.sinks)
    if target is None:
        raise HTTPException(404, "no counts: add a sqlite or postgres sink under `sinks:` to keep them")
    tz = ZoneInfo(console.config.time_zone)
    since = parse_time("today", tz)
    try:
        lines = line_counts(target, Filters(run=ALL_RUNS, since_ns=since), Buckets(1440, tz))
        visits = zone_counts(target, Filters(run=ALL_RUNS, since_ns=since))
        inside = zone_counts(target, Filters(run=runner.parts.run.run_id))  # visits begun before today too
    except SinkError as exc:
        raise HTTPException(503, str(exc)) from None
    cameras: dict[str, dict] = {config.id: {"lines": [], "zones": []} for config in runner.streams()}
    for (sid, line, direction, name), count in _summed(lines, ("stream_id", "line", "direction", "class_name"),
                                                       "crossings"):
        cameras.setdefault(sid, {"lines": [], "zones": []})["lines"].append(
            {"line": line, "direction": direction, "class_name": name, "crossings": count})
    now_inside = {(row["stream_id"], row["zone"], row["class_name"]): row["inside"] for row in inside}
    for (sid, zone, name), count in _summed(visits, ("stream_id", "zone", "class_name"), "visits"):
        cameras.setdefault(sid, {"lines": [], "zones": []})["zones"].append(
            {"zone": zone, "class_name": name, "visits": count, "inside": now_inside.get((sid, zone, name), 0)})
    return {"day": datetime.fromtimestamp(since / 1e9, tz).date().isoformat(), "time_zone": console.config.time_zone,
            "cameras": cameras}


def _summed(rows: list[dict], keys: tuple[str, ...], count: str) -> list[tuple[tuple, int]]:
    """The `count` of `rows` (one row per run) added up per value of `keys`, in the order of those values."""
    totals: dict[tuple, int] = {}
    for row in rows:
        key = tuple(row[name] for name in keys)
        totals[key] = totals.get(key, 0) + row[count]
    return sorted(totals.items(), key=lambda item: [str(v) for v in item[0]])
