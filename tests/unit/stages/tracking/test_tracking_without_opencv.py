"""OpenCV is optional (the 'motion' extra, for `tracker.camera_motion`): without it the tracker runs as ever, and a
config that asks for camera motion is refused at load, naming the extra. Each case runs in a fresh interpreter in
which `import cv2` fails, as on an install without the extra (the test environment has OpenCV through its extras)."""
import subprocess
import sys
import textwrap

from tests.conftest import REPO

NO_OPENCV = "import sys; sys.modules['cv2'] = None  # any import of cv2 now raises ImportError\n"


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_OPENCV + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, timeout=120)


def test_the_tracking_stage_tracks_without_opencv():
    proc = _python("""
        import numpy as np
        from pipeline.stages.tracking.stage import TrackingStage
        from pipeline.types import Detections, Frame, FrameResult

        stage = TrackingStage()
        for seq in range(5):
            frame = Frame("cam-1", seq, seq * 40_000_000, 0, np.zeros((480, 640, 3), np.uint8), 640, 480, index=seq)
            result = FrameResult(frame, Detections(np.array([[100 + 4 * seq, 100, 140 + 4 * seq, 200]], np.float32),
                                                   np.full(1, 0.9, np.float32), np.zeros(1, np.int32)), run_id="r")
            stage.process(result)
        print(result.detections.track_id.tolist())
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["[1]"]


def test_a_config_asking_for_camera_motion_without_opencv_is_refused_naming_the_extra(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(f"streams: [{{id: cam, url: rtsp://camera.invalid/1}}]\n"
                    f"detector: {{model: {REPO / 'samples' / 'models' / 'world_detector.onnx'}}}\n"
                    "tracker: {camera_motion: true}\n")
    proc = _python(f"""
        from pipeline.cli import main
        sys.exit(main(["validate", {str(site)!r}]))
    """)
    assert proc.returncode != 0
    assert f"{site}:3: tracker -> camera_motion" in proc.stderr and "pip install 'streamweave[motion]'" in proc.stderr
    assert "Traceback" not in proc.stderr
