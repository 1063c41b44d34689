"""Test-wide settings: a private cache directory, so tests never touch ~/.cache/alexnet."""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("ALEXNET_CACHE", str(tmp_path_factory.mktemp("alexnet-cache")))
    yield
    mp.undo()
