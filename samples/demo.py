"""The demo: run configs/demo.yaml with a local webhook receiver and MQTT broker, then score the run.

    python -m samples.demo [CONFIG]
    python -m samples.demo --serve [CONFIG]     # until Ctrl-C, with the web console on http://127.0.0.1:9108/

Starts an HTTP receiver on the config's webhook port and Mosquitto on its MQTT port (when Debian's
`mosquitto` is installed; scripts/setup.sh installs it), runs the pipeline with live progress,
then prints the summary, what the webhook and the broker received, what was written to disk, and
how accurate the run was against the synthetic world's ground truth. With `--serve` the cameras run until
Ctrl-C as a service, with its API and web console (`runtime.http`, default 127.0.0.1:9108); zones, lines and
cameras changed from the console apply live but are not written to the demo's config file.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.config import load_config
from pipeline.config.models import HttpConfig
from pipeline.errors import PipelineError
from pipeline.runtime.progress import progress_reporter, summary
from pipeline.runtime.runner import PipelineRunner
from pipeline.service import Control, Service
from samples.local_services import (
    MOSQUITTO,
    MosquittoBroker,
    RecordingHttpServer,
    Subscriber,
)
from samples.world.demo_report import demo_report


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("pipeline.progress").setLevel(logging.INFO)  # progress lines when not on a terminal
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    if args.serve:
        config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"duration_s": None})})
    out_dir = Path(config.runtime.outbox_path).parent
    shutil.rmtree(out_dir / "mosquitto", ignore_errors=True)  # the broker's own state; stored results stay:
    # each start is a run of its own in the database (`run_pipeline.py query configs/demo.yaml runs`)
    webhook = next((s for s in config.sinks if s.type == "webhook"), None)
    mqtt = next((s for s in config.sinks if s.type == "mqtt"), None)
    receiver = RecordingHttpServer(urlsplit(webhook.url).port).start() if webhook else None
    broker = listener = None
    if mqtt and MOSQUITTO:
        (out_dir / "mosquitto").mkdir(parents=True, exist_ok=True)
        broker = MosquittoBroker(out_dir / "mosquitto", mqtt.port).start()
        listener = Subscriber(mqtt.port, f"{mqtt.topic_prefix}/#")
    elif mqtt:
        print("note: Mosquitto is not installed, so MQTT events wait in the outbox (bash scripts/setup.sh installs it)")
    runner = PipelineRunner(config)
    job = runner
    if args.serve:
        http = config.runtime.http or HttpConfig()
        job = Service(runner, http, Control(runner))  # no file: the console's changes are not saved
        print(f"console: http://{http.host}:{job.port}/ (Ctrl-C stops)")
    signal.signal(signal.SIGINT, lambda *_: job.request_stop())
    try:
        with progress_reporter(config.runtime) as (on_progress, interval):
            snap = job.run(config.runtime.duration_s, on_progress=on_progress, progress_interval_s=interval)
    finally:
        for stop in (listener and listener.close, receiver and receiver.stop, broker and broker.stop):
            if stop:
                stop()
    print(summary(snap))
    print()
    print(_deliveries(receiver, listener, snap.extra.get("outbox", {})))
    print(_outputs(config, args.config))
    db = next((s.path for s in config.sinks if s.type == "sqlite"), None)
    if db is not None:
        print()
        print(demo_report(config, db))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m samples.demo", description=__doc__.split("\n\n")[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", default="configs/demo.yaml",
                        help="the config to run (default configs/demo.yaml)")
    parser.add_argument("--serve", action="store_true", help="run until Ctrl-C with the API and web console "
                                                             "(runtime.http, default http://127.0.0.1:9108/)")
    return parser


def _deliveries(receiver, listener, outbox: dict) -> str:
    lines = ["Event delivery (through the durable outbox):"]
    if receiver is not None:
        kinds = _count(r.json().get("kind", "?") for r in receiver.received)
        lines.append(f"  webhook received {len(receiver.received)} events: {kinds}")
    if listener is not None:
        topics = sorted({topic for topic, _ in listener.messages})
        lines.append(f"  MQTT broker delivered {len(listener.messages)} messages on {len(topics)} topics, e.g. {topics[:4]}")
    pending = {name: stats.get("pending", 0) for name, stats in outbox.items()}
    lines.append(f"  still pending in the outbox (delivered on the next start): {pending}")
    return "\n".join(lines)


def _outputs(config, config_path: str) -> str:
    """What the config's file sinks wrote, and how to ask the stored results."""
    written = []
    for sink in config.sinks:
        if sink.type in ("sqlite", "jsonl"):
            written.append(f"  {sink.path} ({sink.type}: {sink.what})")
        elif sink.type == "mot":
            tracks = len(list(Path(sink.directory).rglob("*.txt")))
            written.append(f"  {sink.directory}/: {tracks} MOTChallenge track files")
        elif sink.type == "media":
            media = Path(sink.directory)
            snapshots = len([p for p in media.rglob("*.jpg") if not p.name.endswith("_crop.jpg")])
            written.append(f"  {media}/: {snapshots} snapshots and {len(list(media.rglob('*.mp4')))} event clips")
    return "\n".join(["Written:", *written, f"Ask the stored results: python run_pipeline.py query {config_path} "
                       "[lines|zones|events|runs] (see query --help)"])


def _count(items) -> str:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return json.dumps(dict(sorted(counts.items())))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
