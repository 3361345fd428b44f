import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test's data, caches and results out of the user's home."""
    home = tmp_path_factory.getbasetemp() / "superbench-home"
    monkeypatch.setenv("SUPERBENCH_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
