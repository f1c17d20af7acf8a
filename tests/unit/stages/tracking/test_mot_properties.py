"""Properties of the MOTChallenge readers and the `track` command: whatever a det.txt or seqinfo.ini holds,
reading it gives clean numbers or a SourceError naming the file (and the line of the first bad row),
never another exception; the command exits 0 or 2 with that message, never with a traceback; and rows
written in the format come back as they were."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import mot
from pipeline.errors import SourceError
from pipeline.stages.tracking.cli import track_command

pytestmark = pytest.mark.fault

PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

numbers = st.floats(-1e4, 1e4, allow_nan=False).map(lambda v: f"{v:.3f}")
oddities = st.sampled_from(["", " ", "nan", "inf", "-inf", "1e999", "x", "0x10", "1,5", "--1", "\t", "1e", "١٢",
                            "\x00", "\udcff", "☃", "-0", "2.5", "1e12", "0", "-3"])


@st.composite
def good_rows(draw) -> str:
    frame = draw(st.integers(1, 300))
    x, y = draw(numbers), draw(numbers)
    w, h = (draw(st.floats(0, 2000)) for _ in range(2))
    score = draw(st.floats(-5, 5))
    extra = draw(st.integers(0, 3))
    return ",".join([str(frame), "-1", x, y, f"{w:.2f}", f"{h:.2f}", f"{score:.4f}", *["-1"] * extra])


@st.composite
def broken_rows(draw) -> str:
    """A good row with one value replaced, cut short, or arbitrary text."""
    kind = draw(st.sampled_from(["replace", "cut", "text"]))
    if kind == "text":
        return draw(st.text(max_size=30).map(lambda t: t.replace("\n", " ").replace("\r", " ")))
    fields = draw(good_rows()).split(",")
    if kind == "cut":
        return ",".join(fields[: draw(st.integers(1, 6))])
    fields[draw(st.integers(0, len(fields) - 1))] = draw(oddities)
    return ",".join(fields)


lines = st.one_of(good_rows(), good_rows(), broken_rows(), st.just(""))


def first_bad_line(path, text_lines: list[str]) -> int | None:
    """The 1-based line the reader names, checked independently: that line alone fails, each one before
    it alone is read."""
    for number, line in enumerate(text_lines, 1):
        single = path.with_name("single.txt")
        single.write_bytes(line.encode("utf-8", "surrogateescape"))
        try:
            mot.read_mot(single)
        except SourceError:
            return number
    return None


@PROPERTY
@given(text_lines=st.lists(lines, max_size=12), newline=st.sampled_from(["\n", "\r\n"]))
def test_any_det_file_reads_as_clean_rows_or_an_error_naming_its_first_bad_line(tmp_path, text_lines, newline):
    path = tmp_path / "det.txt"
    path.write_bytes(newline.join(text_lines).encode("utf-8", "surrogateescape"))
    bad = first_bad_line(path, text_lines)
    try:
        table = mot.read_mot(path)
    except SourceError as exc:
        assert bad is not None, exc
        assert str(exc).startswith(f"{path}:{bad}: "), (str(exc), bad)
        assert "expected frame,id,x,y,w,h,score" in str(exc)
        return
    assert bad is None, f"line {bad} was accepted"
    assert table.ndim == 2 and table.shape[1] >= 7 and np.isfinite(table).all()
    assert (table[:, 0] >= 1).all() and (table[:, 0] == np.round(table[:, 0])).all()
    assert (table[:, 4:6] >= 0).all()


@PROPERTY
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_as_a_det_file_never_escape_as_anything_but_a_source_error(tmp_path, data):
    path = tmp_path / "det.txt"
    path.write_bytes(data)
    try:
        table = mot.read_mot(path)
    except SourceError as exc:
        assert re.match(rf"^{re.escape(str(path))}:\d+: ", str(exc)), exc
    else:
        assert np.isfinite(table).all()


@st.composite
def tables(draw) -> np.ndarray:
    n = draw(st.integers(0, 40))
    frames = draw(st.lists(st.integers(1, 500), min_size=n, max_size=n))
    ids = draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n))
    xy = draw(st.lists(st.tuples(numbers, numbers), min_size=n, max_size=n))
    wh = draw(st.lists(st.tuples(st.floats(0, 4000), st.floats(0, 4000)), min_size=n, max_size=n))
    scores = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    rows = [[f, i, float(x), float(y), w, h, s] for f, i, (x, y), (w, h), s in zip(frames, ids, xy, wh, scores)]
    return np.array(rows, np.float64).reshape(-1, 7)


@PROPERTY
@given(table=tables())
def test_written_rows_read_back_as_written(tmp_path, table):
    path = tmp_path / "res" / "seq.txt"
    mot.write_mot(path, mot.format_table(table))
    back = mot.read_mot(path)
    assert back.shape == (len(table), 10) or (len(table) == 0 and back.shape == (0, 10))
    np.testing.assert_array_equal(back[:, :2], table[:, :2])
    np.testing.assert_allclose(back[:, 2:6], table[:, 2:6], atol=0.005 + 1e-9)
    np.testing.assert_allclose(back[:, 6], table[:, 6], atol=0.00005 + 1e-12)
    frames = list(mot.frames_of(back))
    assert [f for f, _ in frames] == list(range(1, int(table[:, 0].max(initial=0)) + 1))
    assert sum(len(d) for _, d in frames) == len(table)


seqinfo_values = st.one_of(st.integers(-5, 10**8).map(str), st.floats().map(str), oddities,
                           st.text(max_size=8).map(lambda t: t.replace("\n", " ")))


@PROPERTY
@given(keys=st.dictionaries(st.sampled_from(["name", "frameRate", "seqLength", "imWidth", "imHeight", "imDir"]),
                            seqinfo_values, max_size=6),
       header=st.sampled_from(["[Sequence]", "[sequence]", "", "[Sequence", "[Other]"]),
       junk=st.sampled_from(["", "%(x)s = 1", "no equals sign", "[Sequence]", "name = dup"]))
def test_any_seqinfo_reads_as_a_sane_sequence_or_an_error_naming_the_file(tmp_path, keys, header, junk):
    path = tmp_path / "seqinfo.ini"
    body = [header, *(f"{k}={v}" for k, v in keys.items()), junk]
    path.write_bytes("\n".join(body).encode("utf-8", "surrogateescape"))
    try:
        info = mot.read_seqinfo(path)
    except SourceError as exc:
        assert str(exc).startswith(f"{path}: "), exc
        return
    assert math.isfinite(info.frame_rate) and info.frame_rate > 0
    assert 1 <= info.length <= mot.MAX_FRAMES and info.width >= 1 and info.height >= 1


def test_a_missing_seqinfo_says_which_option_to_fix(tmp_path):
    with pytest.raises(SourceError, match=r"no such file; pass --seqinfo"):
        mot.read_seqinfo(tmp_path / "absent.ini")


@PROPERTY
@given(text_lines=st.lists(lines, min_size=1, max_size=10))
def test_the_track_command_exits_0_or_2_with_the_bad_line_named(tmp_path, capsys, text_lines):
    det, out = tmp_path / "det.txt", tmp_path / "out" / "res.txt"
    det.write_bytes("\n".join(text_lines).encode("utf-8", "surrogateescape"))
    bad = first_bad_line(det, text_lines)
    code = track_command(["--det", str(det), "--out", str(out)])
    captured = capsys.readouterr()
    if bad is not None:
        assert code == 2 and captured.err.startswith(f"track: {det}:{bad}: "), captured.err
        return
    assert code == 0, captured.err
    table = mot.read_mot(out)
    last = int(mot.read_mot(det)[:, 0].max(initial=0))
    assert ((table[:, 0] >= 1) & (table[:, 0] <= last)).all() and (table[:, 1] >= 1).all()
