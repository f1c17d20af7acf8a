"""`runtime.cluster`: an instance of a fleet that shares its cameras through leases in PostgreSQL
(`pipeline.cluster`)."""
from __future__ import annotations

import math

from pydantic import Field, model_validator

from pipeline.config.fields import HOUR_S, KeyPathError, Strict


class ClusterConfig(Strict):
    """Cameras shared by a fleet of instances through leases in PostgreSQL (`pipeline.cluster`); the
    database's `fleet_cameras`, not this file, holds the cameras then."""

    dsn: str = Field(min_length=1, description="postgresql://user@host/db of the fleet's coordinating database "
                     "(the password in PGPASSWORD or ~/.pgpass; ${VAR} works as elsewhere in the file)")
    capacity: int = Field(ge=1, le=100_000, description="cameras this instance may run at most (takeovers included)")
    weight: float | None = Field(None, gt=0, le=1_000_000, description="this instance's share in the assignment "
                                 "relative to the others' (default: capacity)")
    lease_s: float = Field(10.0, ge=1, le=HOUR_S, description="a camera's lease lasts this long unless renewed: "
                           "shorter fails over sooner, longer rides out longer database hiccups")
    heartbeat_s: float | None = Field(None, gt=0, le=HOUR_S, description="how often leases are renewed and the "
                                      "fleet looked at (default: lease_s / 4, the safe choice); must be below "
                                      "lease_s / 3")
    headroom: float = Field(0.2, ge=0, le=0.9, description="share of capacity left free in normal assignment so "
                            "that the cameras of an instance that dies fit on the others")
    url: str | None = Field(None, min_length=1, max_length=1024, description="this instance's API as others "
                            "reach it (http://host:9108), shown by /api/cluster and the console")

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> "ClusterConfig":
        # the renewal after a missed one is sent two heartbeats after the last and must be back before the local
        # stop at lease_s - heartbeat_s (`assignment.renew_deadline`): a quarter leaves it a heartbeat
        if self.heartbeat_s is not None and self.heartbeat_s >= self.lease_s / 3:
            raise KeyPathError(("heartbeat_s",), f"{self.heartbeat_s:g} s must be below lease_s / 3 "
                               f"({self.lease_s / 3:g} s): a lease must survive one missed heartbeat (just below a "
                               "third, the renewal after it has almost no time for its database round trip); lower "
                               "heartbeat_s or raise lease_s; the default is a quarter of the lease")
        return self

    @property
    def heartbeat(self) -> float:
        """Seconds between heartbeats: `heartbeat_s`, else a quarter of the lease."""
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_s / 4

    @property
    def share(self) -> float:
        """The weight in the assignment: `weight`, else `capacity`."""
        return self.weight if self.weight is not None else float(self.capacity)

    @property
    def normal_cap(self) -> int:
        """Cameras taken in normal assignment: capacity less the headroom, rounded down, at least one."""
        return max(1, math.floor(self.capacity * (1 - self.headroom) + 1e-9))
