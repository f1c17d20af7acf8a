"""Property: whatever is done to a good config (a value replaced by any YAML value, a key removed or added,
an entry repeated, characters typed into the text), reading it either gives a config or raises ConfigError
whose every line names the file, the line and a key path, and the checks before a run (preflight) list
problems by key path instead of raising. Nothing else escapes: no TypeError, no traceback for a user."""
from __future__ import annotations

import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.config.fields import KeyPathError
from pipeline.config.loader import parse_config
from pipeline.errors import ConfigError
from pipeline.runtime import preflight

pytestmark = pytest.mark.fault

GOOD = {
    "plugins": ["pipeline.testing"],
    "streams": [
        {"id": "cam-1", "url": "fake://cam-1?fps=10&live=0", "lane": "fast", "fps": 5},
        {"id": "cam-2", "url": "rtsp://viewer:secret@192.0.2.10/live", "reconnect_max_s": 10},
    ],
    "lanes": [{"name": "default"}, {"name": "fast", "priority": 10, "max_batch": 2}],
    "detector": {"model": "fake", "engine": "fake", "conf_threshold": 0.3, "input_size": [64, 64],
                 "class_names": ["thing", "other"], "preprocess": {"std": [1.0, 1.0, 1.0]}},
    "tracker": {"high_threshold": 0.5, "low_threshold": 0.1},
    "zones": [{"name": "dock", "streams": ["cam-1"], "polygon": [[0, 0], [40, 0], [40, 30], [0, 30]],
               "classes": ["thing"]}],
    "lines": [{"name": "gate", "start": [0, 20], "end": [60, 20]}],
    "alerts": [{"name": "loiter", "when": "dwell", "zone": "dock", "min_seconds": 3},
               {"name": "counted", "when": "cross", "line": "gate", "direction": "in"}],
    "sinks": [{"type": "sqlite", "path": "runs/properties/d.db", "retention_days": 7},
              {"type": "jsonl", "path": "runs/properties/events.jsonl", "what": "events"},
              {"type": "webhook", "url": "http://127.0.0.1:9/events", "timeout_s": 2},
              {"type": "mqtt", "port": 1883, "topic_prefix": "site"},
              {"type": "media", "directory": "runs/properties/media", "clip_before_s": 2}],
    "runtime": {"outbox_path": "runs/properties/outbox.db", "http": {"port": 9108}, "log_level": "info"},
}
PATH = "<config>"
LINE = re.compile(rf"^{re.escape(PATH)}:\d+: (?P<keys>.+?): \S")
FIXED = {("plugins",), ("stages",)}
"""Left alone: a plugin module named at random would be imported."""

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12),
                    st.sampled_from(["", "auto", "-1", "0", "${UNSET_IN_TESTS}", "rtsp://", "a: b", "~"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                             max_size=3), max_leaves=8)


def paths(node, prefix: tuple = ()) -> list[tuple]:
    """Every key path under `node`."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for key, value in items:
        if prefix + (key,) not in FIXED:
            out += [prefix + (key,), *paths(value, prefix + (key,))]
    return out


def at(node, path: tuple):
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated(draw) -> dict:
    """GOOD with a few random changes."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for _ in range(draw(st.integers(1, 3))):
        candidates = paths(data)
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent, key = at(data, path[:-1]), path[-1]
        action = draw(st.sampled_from(["replace", "remove", "add", "repeat"]))
        if action == "replace":
            parent[key] = draw(values)
        elif action == "remove":
            del parent[key]
        elif action == "add" and isinstance(parent[key], dict):
            parent[key][draw(st.text(min_size=1, max_size=8))] = draw(values)
        elif action == "repeat" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(parent[key][0])
    return data


def assert_named(error: ConfigError) -> None:
    for line in str(error).splitlines():
        match = LINE.match(line)
        assert match and match["keys"] != "(top level)", f"names no key: {line!r}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_a_mutated_config_loads_or_names_the_key(data):
    try:
        config = parse_config(yaml.safe_dump(data, sort_keys=False), PATH)
    except ConfigError as error:
        assert_named(error)
        return
    problems = preflight.check(config)
    assert all(isinstance(p, KeyPathError) and p.loc and p.message for p in problems)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_text_typed_into_a_good_file_never_escapes_as_anything_but_a_config_error(data):
    text = yaml.safe_dump(GOOD, sort_keys=False)
    at_ = data.draw(st.integers(0, len(text)))
    typed = data.draw(st.text(st.sampled_from(list(":-[]{}#&*!|>'\"%@`,? \t\nx0.")), min_size=1, max_size=4))
    try:
        parse_config(text[:at_] + typed + text[at_:], PATH)
    except ConfigError as error:
        assert str(error).startswith(f"{PATH}:")


def test_the_unmutated_config_is_good():
    config = parse_config(yaml.safe_dump(GOOD), PATH)
    assert [p.loc for p in preflight.check(config)] == []
