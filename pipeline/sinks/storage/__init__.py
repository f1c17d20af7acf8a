"""Storage sinks: runs, detections, tracks, events and streams in SQLite (default) or PostgreSQL, one schema.

    from pipeline.sinks.storage import SqliteSink, PostgresSink
    from pipeline.sinks.storage import query   # read results back
"""
from pipeline.sinks.storage.postgres import PostgresSink
from pipeline.sinks.storage.sqlite import SqliteSink
from pipeline.sinks.storage.writer import StorageSink, StorageUnavailable

__all__ = ["PostgresSink", "SqliteSink", "StorageSink", "StorageUnavailable"]
