"""A fleet over HTTP and in Prometheus, from any of its instances.

    GET /api/cluster   this instance (leases held, counters), every instance with its last heartbeat and
                       lanes, every camera with its holder, token and lease expiry, cameras per instance,
                       the latest handoffs with their gaps
"""
from __future__ import annotations

import threading
from collections import Counter
from typing import Iterator

from fastapi import APIRouter, HTTPException
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from pipeline.cluster.coordinator import Coordinator
from pipeline.cluster.store import FleetStore, FleetUnavailable
from pipeline.service.prom import PREFIX

COUNTERS = {  # Coordinator.stats key -> (metric, help)
    "takeovers": ("cluster_takeovers", "cameras this instance took over after their lease expired elsewhere"),
    "rebalance_moves": ("cluster_rebalance_moves", "cameras this instance handed on to rebalance the fleet"),
    "lease_losses": ("cluster_lease_losses", "leases this instance lost (not renewed in time, or taken over)"),
    "fenced_rows": ("cluster_fenced_rows", "stored rows refused because their camera's lease had ended"),
    "heartbeat_failures": ("cluster_heartbeat_failures", "heartbeats that could not reach the fleet's database"),
    "detector_giveups": ("cluster_detector_giveups", "times this instance handed every camera on because its "
                         "detector had failed every batch for a lease"),
}


def router(coordinator: Coordinator, reader: FleetStore) -> APIRouter:
    """reader: the fleet's database as /api/cluster reads it, a store of its own (the coordinator's connection is
    its thread's); whoever made it closes it once the server has stopped."""
    api = APIRouter(prefix="/api")
    lock = threading.Lock()

    @api.get("/cluster", tags=["cluster"])
    def cluster() -> dict:
        """The fleet as its database holds it, and this instance's part in it."""
        try:
            with lock:
                state = reader.state()
        except FleetUnavailable as exc:
            raise HTTPException(503, str(exc)) from None
        per_instance = Counter(camera["instance"] for camera in state["cameras"] if camera["instance"])
        for instance in state["instances"]:
            instance["cameras"] = per_instance.get(instance["name"], 0)
        return {"this": coordinator.stats(), "lease_s": coordinator.config.lease_s,
                "heartbeat_s": coordinator.config.heartbeat, **state}

    return api


class ClusterCollector:
    """This instance's leases and cluster counters as Prometheus metrics."""

    def __init__(self, coordinator: Coordinator):
        self._coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        stats = self._coordinator.stats()
        held = GaugeMetricFamily(f"{PREFIX}_cluster_leases_held", "camera leases this instance holds",
                                 labels=["instance"])
        held.add_metric([stats["instance"]], stats["leases_held"])
        yield held
        for key, (name, text) in COUNTERS.items():
            metric = CounterMetricFamily(f"{PREFIX}_{name}", text, labels=["instance"])
            metric.add_metric([stats["instance"]], stats[key])
            yield metric
