"""Which instance should run which camera: weighted rendezvous hashing with capacity limits, and the local
deadline by which an instance that could not renew its leases stops its cameras. Pure: no database here.

Rendezvous (highest random weight) hashing gives every (camera, instance) pair a score; a camera belongs
to the live instance with the highest score that still has room. An instance joining takes only the
cameras it now scores highest on (about its weight's share); one leaving hands only its own cameras on,
spread over the others. Weighted scores follow Schindelhauer and Schomaker: `-weight / ln(u)` with `u`
uniform in (0, 1) from a hash, so an instance of weight 2 wins twice as often as one of weight 1.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from pydantic import ValidationError

from pipeline.config.models import StreamConfig


@dataclass(frozen=True)
class Member:
    """A live instance as the assignment sees it: its name, weight, the cameras it takes in normal
    assignment (`normal_cap`) and at most (`capacity`, takeovers), and the lanes its pipeline has (None: any)."""

    name: str
    weight: float
    normal_cap: int
    capacity: int
    lanes: frozenset[str] | None = None


def score(camera: str, instance: str, weight: float) -> float:
    """The instance's claim on the camera: higher wins. Stable across processes and hosts (SHA-1, not hash())."""
    digest = hashlib.sha1(f"{camera}\x00{instance}".encode()).digest()
    u = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 2)  # in (0, 1), never 0 or 1
    return -weight / math.log(u)


def ranking(camera: str, members: list[Member]) -> list[Member]:
    """The members in the order they want the camera, best first (ties broken by name)."""
    return sorted(members, key=lambda m: (-score(camera, m.name, m.weight), m.name))


def assign(cameras: list[str], members: list[Member], lanes: dict[str, str] | None = None) -> dict[str, str]:
    """camera -> instance for every camera that fits: each goes to its best-ranked member below its
    normal cap; once all of those are full, to its best-ranked member below its capacity; else nowhere.
    `lanes`: each camera's lane; a camera goes only to a member that has it (instances whose configs
    differ, as while a new lane is rolled out). Cameras are placed in a fixed order (sorted ids), so every
    instance computes the same answer from the same fleet."""
    held = {m.name: 0 for m in members}
    out: dict[str, str] = {}
    for camera in sorted(cameras):
        lane = (lanes or {}).get(camera)
        order = ranking(camera, [m for m in members if lane is None or m.lanes is None or lane in m.lanes])
        for limit in ("normal_cap", "capacity"):
            chosen = next((m for m in order if held[m.name] < getattr(m, limit)), None)
            if chosen is not None:
                held[chosen.name] += 1
                out[camera] = chosen.name
                break
    return out


def placeable(cameras: dict[str, tuple[int, dict]], members: list[Member]) -> tuple[dict[str, str], dict[str, str]]:
    """From the fleet's cameras (id -> (revision, entry)): the lane of each camera some live member can run, and
    why each other cannot (an entry that is not valid, a lane no member has)."""
    lanes, problems = {}, {}
    for camera, (_, entry) in cameras.items():
        try:
            lane = StreamConfig.model_validate(entry).lane
        except ValidationError as exc:
            problems[camera] = f"its entry is not valid: {exc.errors()[0]['msg']}"
            continue
        if any(member.lanes is None or lane in member.lanes for member in members):
            lanes[camera] = lane
        else:
            problems[camera] = f"no live instance has lane '{lane}'"
    return lanes, problems


def renew_deadline(renew_sent: float, lease_s: float, heartbeat_s: float) -> float:
    """The monotonic moment by which an instance stops its cameras if no renewal has succeeded since one
    sent at `renew_sent`: one heartbeat before the database lets the leases expire. The database sets
    `expires_at = now() + lease_s` when the renewal arrives, which is after it was sent, so the stop comes
    at least `heartbeat_s` before any other instance may take the cameras (clocks run at the same rate)."""
    return renew_sent + lease_s - heartbeat_s
