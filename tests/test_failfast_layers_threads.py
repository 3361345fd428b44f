"""Item 11: `--layer all` is one single-layer probe per layer and nothing else; item 9: `--threads`."""

from __future__ import annotations

import pytest
import torch

import superbench.executors as executors
import superbench.runner as runner
from superbench.cli import main
from superbench.records import read_records
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, scratch_run_options

SMALL = {"steps": 4, "eval_interval": 2, "batch_size": 8, "lr_grid": [1e-2]}


def _opts(tmp_path, **kw):
    return scratch_run_options(tmp_path, **{"overrides": dict(SMALL), **kw})


def test_layer_all_writes_one_probe_record_per_layer_from_one_extraction(tmp_path):
    make_class_corpus(tmp_path, task="ks")
    counter = tmp_path / "forwards.txt"
    records = run(ToneUpstream(counter=str(counter)), [get_task("ks")], tmp_path, _opts(tmp_path, layer="all"))
    assert [r.layer for r in records] == [0, 1, 2]
    assert [r.layer_weights for r in records] == [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    on_disk = read_records([tmp_path / "results"])
    assert sorted(r.layer for r in on_disk) == [0, 1, 2]  # one record per layer, and no weighted-sum record
    assert sorted(p.name.split("-data")[0] for p in (tmp_path / "results").rglob("*.json")) == \
        ["ks-layer0", "ks-layer1", "ks-layer2"]
    assert sum(int(n) for n in counter.read_text().split()) == 60  # every utterance forwarded once, not 3 times
    assert records[0].wall_time["extraction"] > 0 and records[1].wall_time["extraction"] == 0.0

    again = run(ToneUpstream(counter=str(counter)), [get_task("ks")], tmp_path, _opts(tmp_path, layer="all"))
    assert again == records and sum(int(n) for n in counter.read_text().split()) == 60  # all skipped


@pytest.mark.slow
def test_layer_all_on_the_command_line(tmp_path, capsys):
    make_class_corpus(tmp_path, task="ks")
    (tmp_path / "tones.py").write_text("from superbench.testing import ToneUpstream as Tones\n")
    assert main(["run", "--upstream", f"{tmp_path / 'tones.py'}:Tones", "--task", "ks", "--layer", "all",
                 "--data", str(tmp_path), "--results", str(tmp_path / "r"), "--no-store", "--no-progress",
                 "--profile", "ci", "--lr", "0.01"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:] if not line.startswith("95% CI")]
    assert [(row[1], row[2]) for row in rows] == [("ks", "0"), ("ks", "1"), ("ks", "2")]  # not averaged together
    assert sorted(r.layer for r in read_records([tmp_path / "r"])) == [0, 1, 2]
    with pytest.raises(SystemExit):
        main(["run", "--upstream", "fbank", "--task", "ks", "--layer", "every"])
    assert "--layer must be an integer, 'last' or 'all'" in capsys.readouterr().err


class ThreadsSeen(ToneUpstream):
    """Records torch's intra-op thread count at every forward (extraction)."""

    seen: list[int] = []

    def _forward(self, wavs, wav_lengths):
        ThreadsSeen.seen.append(torch.get_num_threads())
        return super()._forward(wavs, wav_lengths)


@pytest.fixture
def train_threads(monkeypatch):
    """Thread counts seen by every head training, through the runner's `train`."""
    seen, real, real_group = [], executors.train, executors.train_group

    def recording(*args, **kw):
        seen.append(torch.get_num_threads())
        return real(*args, **kw)

    def recording_group(*args, **kw):
        seen.append(torch.get_num_threads())
        return real_group(*args, **kw)

    monkeypatch.setattr(executors, "train", recording)
    monkeypatch.setattr(executors, "train_group", recording_group)
    return seen


def test_runner_sets_extraction_and_training_threads_and_restores_them(tmp_path, train_threads):
    make_class_corpus(tmp_path, task="ks")
    before = torch.get_num_threads()
    assert before not in (2, 3)  # conftest pins 1
    ThreadsSeen.seen = []
    run(ThreadsSeen(), [get_task("ks")], tmp_path, _opts(tmp_path, extract_threads=2, train_threads=3))
    assert ThreadsSeen.seen and set(ThreadsSeen.seen) == {2}
    assert train_threads == [3]
    assert torch.get_num_threads() == before

    ThreadsSeen.seen = []
    run(ThreadsSeen(), [get_task("ks")], tmp_path,
        _opts(tmp_path, results_dir=tmp_path / "r2", cache_root=tmp_path / "c2"))
    assert set(ThreadsSeen.seen) == {before} and train_threads[-1] == before  # None leaves torch's setting
    with pytest.raises(ValueError, match="train_threads must be a positive integer"):
        run(ThreadsSeen(), [get_task("ks")], tmp_path, _opts(tmp_path, train_threads=0))


def test_threads_are_restored_when_training_fails(tmp_path, monkeypatch):
    make_class_corpus(tmp_path, task="ks")
    before = torch.get_num_threads()

    def boom(*args, **kw):
        raise RuntimeError("head blew up")

    monkeypatch.setattr(executors, "train", boom)
    monkeypatch.setattr(executors, "train_group", boom)
    with pytest.raises(RuntimeError, match="head blew up"):
        run(ToneUpstream(), [get_task("ks")], tmp_path, _opts(tmp_path, train_threads=3))
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(("flags", "expected"), [
    ([], (None, None)),
    (["--threads", "4"], (4, 4)),
    (["--threads", "4", "--train-threads", "1"], (4, 1)),
    (["--extract-threads", "8"], (8, None)),
])
def test_threads_flags_reach_run_options(tmp_path, monkeypatch, flags, expected):
    seen = []
    monkeypatch.setattr(runner, "run", lambda upstream, tasks, data_root, opts: seen.append(opts) or [])
    make_class_corpus(tmp_path, task="ks")
    assert main(["run", "--upstream", "fbank", "--task", "ks", "--data", str(tmp_path), "--no-store", *flags]) == 0
    assert (seen[0].compute.extract_threads, seen[0].compute.train_threads) == expected
