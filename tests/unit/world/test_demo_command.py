"""`python -m samples.demo`: its options are checked before anything starts."""
from __future__ import annotations

import pytest

from samples.demo import main


def test_help_describes_the_demo_instead_of_reading_a_config_named_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--serve" in out and "configs/demo.yaml" in out


def test_a_mistyped_option_is_refused_naming_it(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--server"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --server" in capsys.readouterr().err
