"""Shared fixtures: paths to the real data beside the repository and to test data."""

from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real public datasets (../shared/data), required by the suite."""
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(
            f"{SHARED_DATA} not found: the tests read real data from ../shared/data "
            "beside the repository"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def test_data() -> Path:
    """Folder of small generated test files committed under tests/data."""
    return TEST_DATA
