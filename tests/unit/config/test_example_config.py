"""configs/example.yaml says it lists every key the pipeline understands, with its default: this keeps it so.

Sections that occur once (detector and its preprocess, tracker, runtime and its http server) state every key
with its default value, and so does the first sink of each built-in type; list entries (streams, lanes,
zones, lines, alert rules, stages) illustrate, so each of their keys must appear in at least one entry.
The shipped configs name only scripts and modules that exist (demo.yaml once pointed at a scripts/demo.sh
that did not).
"""
from __future__ import annotations

import importlib.util
import re
from typing import Any, get_args

import pytest
import yaml
from pydantic import BaseModel

from pipeline.config import load_config, outputs
from pipeline.config.models import PipelineConfig
from tests.conftest import REPO

EXAMPLE = REPO / "configs" / "example.yaml"
RAW = yaml.safe_load(EXAMPLE.read_text())
CONFIG = load_config(EXAMPLE)
SINK_TYPES = [outputs.SqliteStorage, outputs.PostgresStorage, outputs.JsonlOutput, outputs.WebhookOutput,
              outputs.MqttOutput, outputs.MediaOutput, outputs.MotExport]


def nested(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The config model inside a field's annotation, and whether the field holds a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    for arg in get_args(annotation):
        model, is_list = nested(arg)
        if model is not None:
            return model, is_list or getattr(annotation, "__origin__", None) is list
    return None, False


def once(model: type[BaseModel], raw: dict, value: BaseModel, where: str) -> list[str]:
    """Problems of a section that occurs once: every key, each with its default (nested sections alike). A key
    whose default depends on the machine (a default factory: the host name) is stated in a comment instead."""
    problems = []
    for name, field in model.model_fields.items():
        key = f"{where}.{name}"
        if field.default_factory is not None:
            if name in raw or not re.search(rf"^\s*# {name}: ", EXAMPLE.read_text(), re.MULTILINE):
                problems.append(f"{key} depends on the machine: state it as a comment, `# {name}: ...`")
            continue
        if name not in raw:
            if field.default_factory is None:  # a default made at start (the host's name) cannot be written down
                problems.append(f"{key} is missing")
            continue
        inner, is_list = nested(field.annotation)
        if inner is not None and not is_list and isinstance(raw[name], dict):
            problems += once(inner, raw[name], getattr(value, name), key)
        elif not field.is_required() and getattr(value, name) != field.default:
            problems.append(f"{key} is {getattr(value, name)!r}; the default is {field.default!r}")
    return problems


SECTIONS = [(name, *nested(field.annotation)) for name, field in PipelineConfig.model_fields.items()
            if nested(field.annotation)[0] is not None]


@pytest.mark.parametrize("name, model", [(name, model) for name, model, is_list in SECTIONS if not is_list])
def test_a_section_that_occurs_once_states_every_key_with_its_default(name, model):
    assert once(model, RAW[name], getattr(CONFIG, name), name) == []


@pytest.mark.parametrize("name, model", [(name, model) for name, model, is_list in SECTIONS if is_list])
def test_every_key_of_a_list_entry_appears_in_some_entry(name, model):
    stated = {key for entry in RAW[name] for key in entry}
    assert sorted(set(model.model_fields) - stated) == []


@pytest.mark.parametrize("model", SINK_TYPES, ids=lambda model: model.__name__)
def test_the_first_sink_of_each_built_in_type_states_every_key_with_its_default(model):
    kind = get_args(model.model_fields["type"].annotation)[0]
    index = next((i for i, entry in enumerate(RAW["sinks"]) if entry["type"] == kind), None)
    assert index is not None, f"no '{kind}' sink in {EXAMPLE}"
    assert once(model, RAW["sinks"][index], CONFIG.sinks[index], f"sinks[{index}]") == []


def test_every_top_level_key_appears():
    assert sorted(set(PipelineConfig.model_fields) - set(RAW)) == []


@pytest.mark.parametrize("name", ["example.yaml", "demo.yaml"])
def test_the_shipped_configs_name_only_commands_that_exist(name):
    text = (REPO / "configs" / name).read_text()
    scripts = re.findall(r"\b((?:scripts|samples|benchmarks)/[\w/.-]+\.(?:sh|py))\b", text)
    modules = re.findall(r"python -m ([\w.]+)", text)
    assert [path for path in scripts if not (REPO / path).is_file()] == []
    assert [module for module in modules if importlib.util.find_spec(module) is None] == []
    if name == "demo.yaml":
        assert "samples.demo" in modules  # how the demo is run
