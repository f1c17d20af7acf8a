"""Zones, lines and alert rules, reload, and stored events, over HTTP.

    GET    /api/zones            every zone             GET /api/zones/{name}
    PUT    /api/zones/{name}     set one (body: its YAML keys, `streams` included); 201 when new
    DELETE /api/zones/{name}     (the same for /api/lines and /api/alerts; a name may hold "/", as is or %2F)
    POST   /api/reload           re-read the config file, apply what changed
    GET    /api/events           recent stored events, newest first (filters: stream, kind, class, since, until)

Zones, lines and rules change live on every stream without resetting its tracks; each change is validated
with the whole config, applied, then written back to the config file. In a fleet (`runtime.cluster`) they
live in the fleet's database: a change is validated with the fleet's whole document and written there (the
other instances apply it at their next heartbeat), and GET answers what the database holds.
"""
from __future__ import annotations

import calendar
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from fastapi import APIRouter, Body, HTTPException, Query, Response
from starlette.convertors import PathConvertor, register_url_convertor

from pipeline.errors import (ConfigError, FileChanged, NoConfigFile, NoSuchItem, PartiallyApplied, PipelineError,
                             RestartRequired, SinkError, StreamExists)
from pipeline.runtime.placement import OtherShard
from pipeline.service.control import Control
from pipeline.types import class_ids

SECTIONS = {"zones": "zone", "lines": "line", "alerts": "alert rule"}


class _Name(PathConvertor):
    """A name that may hold "/", but not an empty one: `/api/zones/` is the list (redirected), not a zone ''."""
    regex = ".+"


register_url_convertor("name", _Name())


def router(control: Control) -> APIRouter:
    api = APIRouter(prefix="/api")
    for section, what in SECTIONS.items():
        _section_routes(api, control, section, what)

    @api.post("/reload", tags=["config"])
    def reload() -> dict:
        """Re-read the config file, validate all of it, apply only the difference. A bad file (400, with
        file:line) or a change that needs a restart (409) changes nothing; 409 as well for a pipeline started without
        a config file (nothing to reload)."""
        return {"applied": apply(control.reload).summary()}

    @api.get("/events", tags=["events"])
    def events(stream: str | None = None, kind: str | None = None,
               class_: str | None = Query(None, alias="class", description="class name, e.g. car"),
               since: str | None = Query(None, description="ISO 8601 time or Unix seconds"),
               until: str | None = Query(None, description="ISO 8601 time or Unix seconds"),
               limit: int = Query(100, ge=1, le=10_000)) -> list[dict]:
        """Recent events from storage (the first sqlite or postgres sink), newest first, of every run."""
        from pipeline.sinks.storage.query import ALL_RUNS, recent_events  # noqa: PLC0415

        of_classes = None
        if class_ is not None:
            names = control.runner.detector.class_names
            ids, unknown = class_ids([class_], names)
            if unknown:
                raise HTTPException(400, f"class: unknown class '{class_}'; the model's classes: {names}")
            of_classes = ids.tolist()
        try:
            return recent_events(_storage(control), stream_id=stream, kind=kind, class_ids=of_classes,
                                 since_wall_ns=_time_ns("since", since), until_wall_ns=_time_ns("until", until),
                                 limit=limit, run=ALL_RUNS)
        except SinkError as exc:
            raise HTTPException(503, str(exc)) from None

    return api


def apply(change, *args) -> Any:
    """Run a change; its errors as the HTTP answers that say why (nothing changed, but for a 500)."""
    try:
        return change(*args)
    except NoSuchItem as exc:
        raise HTTPException(404, str(exc)) from None
    except (StreamExists, RestartRequired, FileChanged, NoConfigFile, OtherShard) as exc:
        raise HTTPException(409, str(exc)) from None
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    except PartiallyApplied as exc:
        raise HTTPException(500, str(exc)) from None
    except PipelineError as exc:
        raise HTTPException(503, str(exc)) from None
    except RecursionError:  # a body nested hundreds deep, which no zone, line or rule has
        raise HTTPException(400, "the body is nested too deeply; send the keys of one entry as in the YAML") from None


def _section_routes(api: APIRouter, control: Control, section: str, what: str) -> None:
    def listed() -> list[dict]:
        return apply(control.entries, section)

    def one(name: str) -> dict:
        for item in listed():
            if item["name"] == name:
                return item
        raise HTTPException(404, f"no {what} '{name}'; there are: {[item['name'] for item in listed()]}")

    def put(name: str, response: Response, body: dict[str, Any] = Body(...)) -> dict:
        created = apply(control.put, section, name, body)
        response.status_code = 201 if created else 200
        return one(name)

    def delete(name: str) -> Response:
        apply(control.delete, section, name)
        return Response(status_code=204)

    tags = [section]
    api.add_api_route(f"/{section}", listed, methods=["GET"], tags=tags, summary=f"every {what}")
    api.add_api_route(f"/{section}/{{name:name}}", one, methods=["GET"], tags=tags, summary=f"one {what}")
    api.add_api_route(f"/{section}/{{name:name}}", put, methods=["PUT"], tags=tags,
                      summary=f"set a {what} (its YAML keys); it applies live and is written to the config file "
                      "(in a fleet, to its database)")
    api.add_api_route(f"/{section}/{{name:name}}", delete, methods=["DELETE"], status_code=204, tags=tags,
                      summary=f"remove a {what}")


def _storage(control: Control) -> str:
    from pipeline.sinks.storage.query import storage_target  # noqa: PLC0415

    target = storage_target(control.runner.config.sinks)
    if target is None:
        raise HTTPException(404, "no stored events: add a sqlite or postgres sink under `sinks:` to keep them")
    return target


_LATEST_S = 9e9  # Unix seconds (year 2255): beyond it a time in nanoseconds leaves 64 bits


def _time_ns(key: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        seconds = Decimal(value)  # exact: a float of Unix seconds is off by up to a few hundred nanoseconds
    except InvalidOperation:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise HTTPException(400, f"{key}: '{value}' is neither an ISO 8601 time nor Unix seconds") from None
        # without an offset: UTC, as every time the API gives (`wall_time`), not the server's own time zone
        seconds = Decimal(calendar.timegm(moment.utctimetuple()) if moment.tzinfo else
                          calendar.timegm(moment.timetuple())) + Decimal(moment.microsecond) / 10**6
    if not seconds.is_finite() or abs(seconds) >= _LATEST_S:
        raise HTTPException(400, f"{key}: '{value}' is out of range; give Unix seconds under {_LATEST_S:.0e}")
    return int(seconds * 10**9)
