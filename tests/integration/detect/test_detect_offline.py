"""`detect` subcommand: images and videos in, COCO results JSON out."""
import json
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.detect.names import COCO80, COCO80_TO_91
from pipeline.detect.offline import detect_command
from tests.conftest import shared_file


def _frames(clip: str, count: int) -> list[np.ndarray]:
    with av.open(str(shared_file(clip))) as container:
        out = []
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == count:
                return out
    return out


def _write_png(path: Path, image: np.ndarray) -> Path:
    av.VideoFrame.from_ndarray(image, format="rgb24").to_image().save(path)
    return path


def _write_clip(path: Path, images: list[np.ndarray]) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return path


def _base() -> list[str]:
    return ["--model", str(shared_file("models/yolox_nano_416_dynbatch.onnx")), "--engine", "onnxruntime"]


def test_video_frames_get_sequential_image_ids_and_class_ids(tmp_path, capsys):
    clip = _write_clip(tmp_path / "dog.mp4", _frames("media/dog-848x464.mp4", 3))
    out = tmp_path / "results.json"
    assert detect_command([*_base(), "--batch", "2", "--out", str(out), str(clip)]) == 0
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} <= {0, 1, 2} and 0 in {r["image_id"] for r in results}
    people = [r for r in results if r["category_id"] == COCO80.index("person") and r["image_id"] == 0]
    assert people, results
    x, y, w, h = people[0]["bbox"]
    assert 250 < x < 320 and w > 40 and h > 100 and 0 < people[0]["score"] <= 1
    assert "3 images" in capsys.readouterr().out


def test_a_capped_video_keeps_its_source_frame_numbers_as_image_ids(tmp_path, capsys):
    clip = _write_clip(tmp_path / "dog.mp4", _frames("media/dog-848x464.mp4", 6))  # 10 fps
    every, capped = tmp_path / "every.json", tmp_path / "capped.json"
    assert detect_command([*_base(), "--out", str(every), str(clip)]) == 0
    assert detect_command([*_base(), "--fps", "5", "--out", str(capped), str(clip)]) == 0
    assert "3 images" in capsys.readouterr().out  # frames 0, 2 and 4 detected; 1, 3 and 5 skipped
    results, all_frames = json.loads(capped.read_text()), json.loads(every.read_text())
    assert {r["image_id"] for r in results} == {0, 2, 4}
    assert results == [r for r in all_frames if r["image_id"] in (0, 2, 4)]  # the same frames, the same boxes


def test_coco_annotations_give_dataset_image_and_category_ids(tmp_path):
    images = [_write_png(tmp_path / name, frame) for name, frame in zip(("a.png", "b.png"), _frames("media/dog-848x464.mp4", 2))]
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps({
        "images": [{"id": 139, "file_name": "a.png"}, {"id": 285, "file_name": "b.png"}],
        "categories": [{"id": i, "name": n} for i, n in zip(COCO80_TO_91, COCO80)],
    }))  # fmt: skip
    out = tmp_path / "results.json"
    argv = [*_base(), "--coco-annotations", str(annotations), "--out", str(out), *map(str, images)]
    assert detect_command(argv) == 0
    results = json.loads(out.read_text())
    assert {r["image_id"] for r in results} == {139, 285}
    assert 1 in {r["category_id"] for r in results}  # person is 1 in COCO's scheme, 0 in the model's
    assert {r["category_id"] for r in results} <= set(COCO80_TO_91)


def test_image_missing_from_the_annotations_is_reported(tmp_path, capsys):
    image = _write_png(tmp_path / "stray.png", _frames("media/dog-848x464.mp4", 1)[0])
    annotations = tmp_path / "instances.json"
    annotations.write_text(json.dumps({"images": [], "categories": [{"id": 1, "name": "person"}]}))
    argv = [*_base(), "--coco-annotations", str(annotations), "--out", str(tmp_path / "r.json"), str(image)]
    assert detect_command(argv) == 2
    assert "stray.png" in capsys.readouterr().err


def test_missing_input_is_reported_not_raised(tmp_path, capsys):
    assert detect_command([*_base(), "--out", str(tmp_path / "r.json"), str(tmp_path / "nope.mp4")]) == 2
    assert "nope.mp4" in capsys.readouterr().err


@pytest.mark.parametrize("option, value", [("--batch", "0"), ("--conf", "1.5"), ("--iou", "-0.1"),
                                           ("--max-det", "0"), ("--classes", "person,,car")])
def test_an_option_out_of_range_is_reported_naming_it_not_raised(tmp_path, capsys, option, value):
    argv = ["--model", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "r.json"), option, value, "a.jpg"]
    assert detect_command(argv) == 2
    assert f"detect: {option} " in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_an_fps_cap_that_is_no_rate_is_refused_not_ignored(tmp_path, capsys, value):
    argv = ["--model", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "r.json"), "--fps", value, "a.mp4"]
    with pytest.raises(SystemExit) as exit_:
        detect_command(argv)
    assert exit_.value.code == 2 and "--fps" in capsys.readouterr().err


@pytest.mark.parametrize("out", ["folder", "file/r.json"])
def test_an_out_path_that_cannot_be_written_is_refused_before_detecting(tmp_path, capsys, out):
    """Before, the whole input was detected and then a traceback lost every result."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    image = _write_png(tmp_path / "a.png", np.zeros((48, 64, 3), np.uint8))
    assert detect_command([*_base(), "--out", str(tmp_path / out), str(image)]) == 2
    assert f"detect: --out {tmp_path / out}" in capsys.readouterr().err


def test_an_input_that_is_no_picture_is_reported_naming_it_not_raised(tmp_path, capsys):
    sound = tmp_path / "sound.wav"
    with av.open(str(sound), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert detect_command([*_base(), "--out", str(tmp_path / "r.json"), str(sound)]) == 2
    assert f"input '{sound}' has no video" in capsys.readouterr().err
    assert detect_command([*_base(), "--out", str(tmp_path / "r.json"), str(tmp_path)]) == 2
    assert f"input '{tmp_path}' is a folder" in capsys.readouterr().err


def test_a_model_or_class_the_detector_refuses_is_named_by_its_option_not_a_config_key(tmp_path, capsys):
    """`detect` has no config file: 'set detector.model' or 'detector.classes: unknown class' named keys the user
    never wrote."""
    image = _write_png(tmp_path / "a.png", np.zeros((48, 64, 3), np.uint8))
    out = ["--out", str(tmp_path / "r.json"), str(image)]
    assert detect_command([*_base(), "--classes", "persn", *out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("detect: --classes: unknown class 'persn'") and "detector." not in err
    assert detect_command(["--model", str(image), *out]) == 2  # a picture given as the model
    err = capsys.readouterr().err
    assert "set --model to an ONNX model file" in err and "detector." not in err
