"""Detections: columns a stage adds travel with their rows."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.types import Detections


def three() -> Detections:
    return Detections(np.arange(12, dtype=np.float32).reshape(3, 4), np.array([0.9, 0.8, 0.7], np.float32),
                      np.array([0, 2, 2], np.int32), np.array([0, 0, 1], np.int32))


def test_an_added_attribute_follows_masks_row_ranges_and_concatenation():
    dets = three()
    dets.add_attribute("plate", np.array(["AB-1", "CD-2", "EF-3"]))
    assert dets[dets.class_id == 2].attributes["plate"].tolist() == ["CD-2", "EF-3"]
    assert dets.rows(1, 3).attributes["plate"].tolist() == ["CD-2", "EF-3"]
    assert dets.rows(1, 3).score.tolist() == pytest.approx([0.8, 0.7])
    other = three()
    other.add_attribute("plate", np.array(["X", "Y", "Z"]))
    other.add_attribute("colour", np.zeros(3))
    joined = Detections.concat([dets, other])
    assert joined.attributes["plate"].tolist() == ["AB-1", "CD-2", "EF-3", "X", "Y", "Z"]
    assert "colour" not in joined.attributes  # not every part has it


def test_an_attribute_must_have_one_value_per_row_and_a_name_of_its_own():
    dets = three()
    with pytest.raises(ValueError, match="attribute 'speed' needs 3 rows, got shape \\(2,\\)"):
        dets.add_attribute("speed", np.zeros(2))
    with pytest.raises(ValueError, match="'score' would replace a column"):
        dets.add_attribute("score", np.zeros(3))
