"""What users read names only what exists: every file or folder of the repository that the README, docs/, the
samples' notes, the shipped configs and deploy/ point at is there; every subcommand's --help names the
command as it was run."""
from __future__ import annotations

import re
import sys

import pytest

from pipeline.cli import main
from tests.conftest import REPO

DOCUMENTS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "samples").rglob("*.md"),
                    *(REPO / "configs").glob("*.yaml"), *(path for path in (REPO / "deploy").rglob("*")
                                                          if path.is_file())])
TOP = "pipeline|samples|benchmarks|scripts|tests|docs|deploy|configs"
PATH = re.compile(rf"(?<![\w/.~-])(?:{TOP})/[\w./-]*\w")


def named_paths(text: str) -> list[str]:
    """The repository paths in `text` (`pipeline/cli.py`, `deploy/kubernetes/`), a trailing dot or slash left off."""
    return sorted({match.rstrip("./") for match in PATH.findall(text)})


def test_a_path_is_read_with_its_folder_and_without_the_sentence_around_it():
    text = "see `pipeline/runtime/calibration.py`, deploy/kubernetes/ and docs/GPU.md. (/opt/streamweave/x, ~/docs/y)"
    assert named_paths(text) == ["deploy/kubernetes", "docs/GPU.md", "pipeline/runtime/calibration.py"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_every_repository_path_a_document_names_exists(document):
    missing = [path for path in named_paths(document.read_text()) if not (REPO / path).exists()]
    assert missing == [], f"{document.relative_to(REPO)} names files that do not exist"


COMMANDS = [["run"], ["validate"], ["build-engine"], ["query"], ["detect"], ["track"], ["bench"], ["fleet"],
            ["fleet", "import"], ["fleet", "list"]]


@pytest.mark.parametrize("program", ["streamweave", "run_pipeline.py"])
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_subcommands_help_shows_the_command_line_that_was_run(command, program, monkeypatch, capsys):
    """Installed, the command is `streamweave`; in a checkout, `python run_pipeline.py`: a usage line to copy
    must name the one the user has."""
    monkeypatch.setattr(sys, "argv", [f"/opt/streamweave/venv/bin/{program}"])
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {program} {' '.join(command)} ")
