"""The Ultralytics exports (tests/support/ultralytics_exports.py), made once per session for every module here."""
import pytest

from tests.support.ultralytics_exports import Exports


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("ultralytics-exports"))
