"""`python -m samples.world.export` writes a playable H.264 clip with MOTChallenge ground truth."""
import json

import av
import numpy as np

from samples.world import World
from samples.world.export import main


def test_export_writes_clip_gt_and_events_that_agree_with_the_renderer(tmp_path):
    assert main(["--scene", "street", "--seed", "3", "--frames", "20", "--size", "192x108", "--out", str(tmp_path)]) == 0
    with av.open(str(tmp_path / "clip.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [(f.to_ndarray(format="rgb24"), int(round(f.pts * stream.time_base * 10**9))) for f in container.decode(stream)]
    assert len(decoded) == 20
    assert decoded[0][0].shape == (108, 192, 3)
    assert [pts for _, pts in decoded] == [round(i * 1e9 / 15) for i in range(20)]
    world = World("street", 3, (192, 108), 15)
    rendered, truth = world.render(5)
    assert np.abs(decoded[5][0].astype(int) - rendered).mean() < 12  # lossy, but the same picture

    rows = [line.split(",") for line in (tmp_path / "gt" / "gt.txt").read_text().splitlines()]
    frame6 = sorted((int(r[1]), float(r[2]), float(r[3]), int(r[7])) for r in rows if r[0] == "6")
    assert frame6 == sorted((gt.track_id, gt.box[0], gt.box[1], gt.class_id + 1) for gt in truth)
    events = json.loads((tmp_path / "events.json").read_text())
    assert events["class_names"][:2] == ["person", "bicycle"]
    assert set(events["line_counts"]) == {"eastbound", "westbound"}
    assert "frameRate=15" in (tmp_path / "seqinfo.ini").read_text()
