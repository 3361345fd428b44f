import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models are dominated by thread hand-off on 2 cores; one thread is several times faster.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test's data, caches, results and leaderboard out of the user's home."""
    home = tmp_path_factory.getbasetemp() / "superbench-home"
    monkeypatch.setenv("SUPERBENCH_HOME", str(home))
    monkeypatch.delenv("SUPERBENCH_DB", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield


@pytest.fixture()
def tone_task(tmp_path):
    """(utterance cache, data(split) -> (ids, class indices)) of a small tone corpus (superbench.testing)."""
    from superbench.testing import cached_class_task

    return cached_class_task(tmp_path)
