"""Item 7: everything a run needs, for every requested task, is checked before the first extraction."""

from __future__ import annotations

import json
import logging

import pytest

import superbench.preflight as preflight
from superbench.cli import main
from superbench.exit_codes import ExitCode
from superbench.features.store import CacheError
from superbench.manifest import write_task_manifest
from superbench.preflight import cache_bytes_needed
from superbench.registry import PluginAttributeError
from superbench.runner import run
from superbench.task_plan import plan_task
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, make_sequence_corpus, scratch_run_options
from superbench.upstream import load_upstream

SMALL = {"steps": 4, "eval_interval": 2, "batch_size": 8, "lr_grid": [1e-2]}
TONES_PLUGIN = ("from superbench.testing import ToneUpstream\n\n"
                "class Tones(ToneUpstream):\n"
                "    def __init__(self, path=None):\n"
                "        super().__init__(counter={counter!r})\n")


def _opts(tmp_path, **kw):
    return scratch_run_options(tmp_path, **{"overrides": dict(SMALL), **kw})


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A private SUPERBENCH_HOME (so "no cache folder" means this test extracted nothing) and a counting plugin."""
    home = tmp_path / "home"
    monkeypatch.setenv("SUPERBENCH_HOME", str(home))
    counter = tmp_path / "forwards.txt"
    (tmp_path / "tones.py").write_text(TONES_PLUGIN.format(counter=str(counter)))
    common = ["--upstream", f"{tmp_path / 'tones.py'}:Tones", "--data", str(tmp_path / "data"), "--no-store",
              "--no-progress", "--results", str(tmp_path / "r"), "--profile", "ci"]
    return home, counter, common


def test_missing_task_folders_are_all_named_with_the_tasks_the_data_root_has(tmp_path, cli_env, caplog):
    home, counter, common = cli_env
    make_class_corpus(tmp_path / "data", task="ks")
    make_class_corpus(tmp_path / "data", task="er", n_classes=4)
    assert main(["run", "--task", "ks,sid,pr", *common]) == ExitCode.USAGE
    assert ("has no folder for task(s) sid, pr (<task>/meta.json); it has ks, er: run those with "
            "`--task ks,er`") in caplog.text
    assert not counter.exists() and not (home / "features").exists() and not (tmp_path / "r").exists()

    with pytest.raises(FileNotFoundError, match=r"task\(s\) asr \(<task>/meta.json\); it has no prepared task folder"):
        run(ToneUpstream(), [get_task("asr")], tmp_path / "empty", _opts(tmp_path))


def test_layer_outside_the_upstream_fails_before_any_extraction(tmp_path, cli_env, caplog):
    home, counter, common = cli_env
    make_class_corpus(tmp_path / "data", task="ks")
    assert main(["run", "--task", "ks", "--layer", "3", *common]) == ExitCode.USAGE
    assert "--layer 3 is out of range: upstream tone-test has 3 layers, 0..2" in caplog.text
    assert not counter.exists() and not (home / "features").exists()
    for bad in (-1, 7):
        with pytest.raises(ValueError, match=f"--layer {bad} is out of range"):
            run(ToneUpstream(), [get_task("ks")], tmp_path / "data", _opts(tmp_path, layer=bad))
    assert not (tmp_path / "cache").exists()


def test_labels_of_a_later_task_fail_before_the_first_task_extracts(tmp_path):
    make_class_corpus(tmp_path, task="ks")
    sid = make_class_corpus(tmp_path, task="sid")
    rows = {s: [json.loads(x) for x in (sid / f"{s}.jsonl").read_text().splitlines()] for s in ("train", "dev", "test")}
    rows["test"][0]["label"] = "c7"
    write_task_manifest(sid, task="sid", corpus="tones", version="1", label_field="label",
                        labels=["c0", "c1", "c2"], splits=rows)
    with pytest.raises(ValueError, match="labels outside the inventory"):
        run(ToneUpstream(), [get_task("ks"), get_task("sid")], tmp_path, _opts(tmp_path))
    assert not (tmp_path / "cache").exists()  # ks comes first, and was not extracted


def _shared_audio_sid(root, ks_dir):
    """A SID manifest over the KS audio: the same files, another task."""
    splits = {}
    for split in ("train", "dev", "test"):
        rows = [json.loads(x) for x in (ks_dir / f"{split}.jsonl").read_text().splitlines()]
        splits[split] = [{**r, "audio": f"../ks/{r['audio']}"} for r in rows]
    meta = json.loads((ks_dir / "meta.json").read_text())
    write_task_manifest(root / "sid", task="sid", corpus="tones", version="1", label_field="label",
                        labels=meta["labels"], splits=splits)


def test_disk_estimate_counts_shared_audio_once_and_cached_audio_not_at_all(tmp_path):
    ks_dir = make_class_corpus(tmp_path, task="ks")
    _shared_audio_sid(tmp_path, ks_dir)
    make_sequence_corpus(tmp_path, task="pr")
    up, opts = ToneUpstream(), _opts(tmp_path)
    fp = up.fingerprint()

    def plans(o):
        return [plan_task(up, get_task(t), tmp_path, o, fp) for t in ("ks", "sid", "pr")]

    per_utt = 3 * 16 * 4  # utterance level: L x D float32 means
    pr_frames = sum(int(up.num_frames([u.num_samples])[0]) for u in plans(opts)[2].manifest.utterances())
    assert cache_bytes_needed(plans(opts), opts) == {"ks": 60 * per_utt, "sid": 0, "pr": pr_frames * 3 * 16 * 2}

    run(up, [get_task("ks")], tmp_path, opts)  # ks's audio is now cached
    fresh = opts.replace(results_dir=tmp_path / "other-results")  # sid/pr/ks all still "to do"
    assert cache_bytes_needed(plans(fresh), fresh) == {"ks": 0, "sid": 0, "pr": pr_frames * 3 * 16 * 2}
    assert cache_bytes_needed(plans(fresh), fresh.replace(use_cache=False)) == {}


def test_too_little_disk_fails_for_all_tasks_before_any_extraction(tmp_path, cli_env, monkeypatch, caplog):
    home, counter, common = cli_env
    make_class_corpus(tmp_path / "data", task="ks")
    make_sequence_corpus(tmp_path / "data", task="pr")
    monkeypatch.setattr(preflight, "free_bytes", lambda path: 20_000)
    with pytest.raises(CacheError, match=r"not enough disk for the feature cache: .*\(ks 11.2 KiB, pr .*only 19.5 KiB"):
        run(ToneUpstream(), [get_task("ks"), get_task("pr")], tmp_path / "data", _opts(tmp_path))
    assert not (tmp_path / "cache").exists()
    assert main(["run", "--task", "ks,pr", *common]) == ExitCode.RUNTIME
    assert "not enough disk" in caplog.text and "--no-cache" in caplog.text
    assert not counter.exists() and not (home / "features").exists()


PLAIN = '''
import torch


class TwoLayerEnergy(torch.nn.Module):
    num_layers, hidden_size, downsample_rate = 2, 1, 160

    def forward(self, wavs, wav_lengths):
        e = wavs.unfold(1, 400, 160).pow(2).mean(-1, keepdim=True)
        return [e, e.sqrt()], (wav_lengths - 400) // 160 + 1
'''


def test_a_mistyped_plugin_class_gets_a_did_you_mean_not_a_traceback(tmp_path, caplog):
    (tmp_path / "myup.py").write_text(PLAIN)
    spec = f"{tmp_path / 'myup.py'}:TwoLayerEnrgy"
    with pytest.raises(PluginAttributeError, match="has no 'TwoLayerEnrgy'; did you mean 'TwoLayerEnergy'"):
        load_upstream(spec)
    with caplog.at_level(logging.ERROR):
        assert main(["upstreams", "validate", spec]) == ExitCode.USAGE
        assert main(["run", "--upstream", spec, "--task", "ks", "--data", str(tmp_path)]) == ExitCode.USAGE
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("did you mean 'TwoLayerEnergy'?" in e for e in errors)
    assert all("(it defines: TwoLayerEnergy)" in e for e in errors)  # not the `torch` it imports
    assert not any(r.exc_info for r in caplog.records)


def test_a_checkpoint_directory_that_does_not_exist_says_so(tmp_path, caplog):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"checkpoint directory {missing} does not exist"):
        load_upstream("hubert", path=str(missing))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_upstream(f"wav2vec2={missing}")
    with pytest.raises(FileNotFoundError, match=f"s3prl:hubert_local: checkpoint {missing}.pt does not exist"):
        load_upstream("s3prl:hubert_local", path=f"{missing}.pt")  # refused before s3prl is even imported
    make_class_corpus(tmp_path, task="ks")
    assert main(["run", "--upstream", f"hubert={missing}", "--task", "ks", "--data", str(tmp_path)]) == 2
    assert "does not exist" in caplog.text
