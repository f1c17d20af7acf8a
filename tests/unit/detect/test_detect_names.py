"""Class names from model metadata, config lists or files, COCO-80; and the classes filter."""
from pathlib import Path

import pytest

from pipeline.detect.names import (
    COCO80,
    COCO80_TO_91,
    check_one_per_class,
    class_filter,
    names_from_metadata,
    resolve_names,
)
from pipeline.errors import ConfigError


def test_ultralytics_metadata_names_are_read_in_id_order():
    assert names_from_metadata({"names": "{1: 'bicycle', 0: 'person'}"}) == ["person", "bicycle"]
    assert names_from_metadata({"names": "not python"}) is None
    assert names_from_metadata({}) is None


def test_model_metadata_wins_then_config_then_coco(tmp_path: Path):
    assert resolve_names({"names": "{0: 'a'}"}, ["b"]) == (["a"], "model metadata")
    assert resolve_names({}, ["b", "c"]) == (["b", "c"], "detector.class_names")
    names_file = tmp_path / "names.txt"
    names_file.write_text("forklift\n\npallet\n")
    assert resolve_names({}, names_file)[0] == ["forklift", "pallet"]
    assert resolve_names({}, None) == (COCO80, "COCO-80 default")


def test_missing_class_names_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot be read"):
        resolve_names({}, tmp_path / "absent.txt")


def test_classes_filter_maps_names_to_ids():
    assert class_filter(["car", "person"], COCO80).tolist() == [2, 0]
    assert class_filter(None, COCO80) is None


def test_unknown_class_name_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="unknown class 'cars'"):
        class_filter(["cars"], COCO80)


def test_coco91_ids_cover_the_80_classes_in_order():
    assert len(COCO80_TO_91) == 80 == len(set(COCO80_TO_91))
    assert COCO80_TO_91[COCO80.index("car")] == 3 and COCO80_TO_91[COCO80.index("toothbrush")] == 90


def test_a_names_file_saved_with_a_byte_order_mark_names_its_first_class_as_written(tmp_path: Path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("person\r\ncar\r\n", encoding="utf-8-sig")  # as Windows Notepad and PowerShell save it
    assert resolve_names({}, names_file)[0] == ["person", "car"]
    assert class_filter(["person"], resolve_names({}, names_file)[0]).tolist() == [0]


def test_a_class_named_twice_in_a_names_file_is_kept_whole_by_a_classes_filter(tmp_path: Path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("car\ntruck\ncar\n")
    assert resolve_names({}, names_file)[0] == ["car", "truck", "car"]
    assert class_filter(["car"], resolve_names({}, names_file)[0]).tolist() == [0, 2]  # not the later id alone
    assert class_filter(["truck", "car"], ["car", "truck", "car"]).tolist() == [1, 0, 2]


def test_a_detr_names_file_of_91_coco_ids_with_n_a_at_each_gap_loads(tmp_path: Path):
    names = ["N/A"] * 91  # as Hugging Face's id2label of DETR has them: every id COCO left unused is "N/A"
    for name, coco_id in zip(COCO80, COCO80_TO_91):
        names[coco_id] = name
    names_file = tmp_path / "coco91.txt"
    names_file.write_text("\n".join(names) + "\n")
    assert resolve_names({}, names_file) == (names, "detector.class_names")
    check_one_per_class(names, "detector.class_names", 91)  # one name per class of a 91-class output
    assert class_filter(["car", "person"], names).tolist() == [3, 1]
    assert class_filter(["N/A"], names).tolist() == [0, 12, 26, 29, 30, 45, 66, 68, 69, 71, 83]


def test_a_names_file_with_no_name_in_it_is_refused_not_replaced_by_coco(tmp_path: Path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("\n  \n")  # as `class_names: []` is refused when the file is read
    with pytest.raises(ConfigError, match="names.txt.* names no class"):
        resolve_names({}, names_file)


def test_a_names_file_saved_as_utf16_by_windows_powershell_is_read(tmp_path: Path):
    names_file = tmp_path / "names.txt"
    names_file.write_text("person\r\ncafé\r\n", encoding="utf-16")  # `> names.txt` in Windows PowerShell 5 writes this
    assert resolve_names({}, names_file)[0] == ["person", "café"]


def test_a_names_file_that_is_not_utf8_text_is_refused_naming_the_file_and_line(tmp_path: Path):
    names_file = tmp_path / "names.txt"
    names_file.write_bytes("person\ncafé\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"names.txt' line 2 is not UTF-8 text.*save the file as UTF-8"):
        resolve_names({}, names_file)
