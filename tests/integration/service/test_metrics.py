"""While it runs, the pipeline answers Prometheus scrapes and JSON status requests."""
import json
import threading
import time
import urllib.request

from pipeline.config.models import PipelineConfig
from pipeline.runtime.runner import PipelineRunner
from pipeline.service import Service
from samples.local_services import free_port
from tests.conftest import shared_file


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.read().decode()


def samples_of(text: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if not line.startswith("#")}


def test_metrics_and_status_are_served_while_running_and_grow(tmp_path):
    port = free_port()
    config = PipelineConfig.model_validate({
        "plugins": ["samples.world.source"],
        "streams": [{"id": "lot", "url": "synthetic://plaza?seed=1&fps=10&size=320x176"},  # paced like a camera
                    {"id": "rtsp-cam", "url": f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/live"}],
        "detector": {"model": str(shared_file("models/yolox_nano_416_dynbatch.onnx"))},
        "sinks": [{"type": "sqlite", "path": str(tmp_path / "out.db")}],
        "runtime": {"metrics_port": port, "outbox_path": str(tmp_path / "outbox.db")},
    })
    service = Service(PipelineRunner(config), config.runtime.http)  # metrics_port: the old key, still read
    thread = threading.Thread(target=service.run, kwargs={"duration_s": 6})
    thread.start()
    try:
        time.sleep(2.5)
        first = samples_of(fetch(port, "/metrics"))
        time.sleep(1.5)
        text = fetch(port, "/metrics")
        status = json.loads(fetch(port, "/status"))
    finally:
        thread.join(30)
    second = samples_of(text)
    assert second["streamweave_frames_detected_total"] > first["streamweave_frames_detected_total"] > 0
    assert second['streamweave_stream_frames_detected_total{stream="lot"}'] > 0
    decoded = second['streamweave_stream_frames_decoded_total{stream="lot"}']
    assert decoded >= second['streamweave_stream_frames_buffered_total{stream="lot"}'] > 0
    assert second['streamweave_stream_up{stream="lot"}'] == 1, status['streams']['lot']
    assert second['streamweave_stream_up{stream="rtsp-cam"}'] == 0
    assert second['streamweave_stream_reconnects_total{stream="rtsp-cam"}'] >= 1
    assert "# TYPE streamweave_stream_frames_dropped_age_total counter" in text
    assert "s3cret" not in text and "s3cret" not in json.dumps(status)
    assert status["streams"]["lot"]["batched"] > 0 and status["engine"] == "onnxruntime"
