"""--device / --precision: resolution and its errors before any work, bf16 features as features of their own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from superbench.cli import main
from superbench.device import Compute, DeviceError, resolve_compute, resolve_device, to_device
from superbench.exit_codes import ExitCode
from superbench.features.store import FeatureCache, cache_path
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, scratch_run_options


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_auto_is_the_cpu_without_an_accelerator_and_cuda_with_one(no_gpu, monkeypatch):
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda", 1)
    assert resolve_device("CUDA:0") == torch.device("cuda", 0)


@pytest.mark.parametrize(("spec", "message"), [
    ("cuda", r"--device cuda: this machine has no usable CUDA device .*use --device cpu or auto"),
    ("cuda:1", r"--device cuda:1: this machine has no usable CUDA device"),
    ("mps", r"--device mps: Apple's MPS backend is not available here"),
    ("tpu", r"--device 'tpu' is not a device: use auto\|cpu\|cuda\|cuda:N\|mps"),
    ("cuda:x", r"is not a device"),
])
def test_a_device_this_machine_lacks_is_refused_naming_the_option(no_gpu, spec, message):
    with pytest.raises(DeviceError, match=message):
        resolve_device(spec)


def test_a_gpu_index_past_the_last_is_refused(two_gpus):
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"--device cuda:2: only 2 CUDA device\(s\) here \(cuda:0..cuda:1\)"):
        resolve_device("cuda:2")


def test_precision_choices_and_fp16_needs_a_gpu():
    assert resolve_compute("cpu").tag == "" and resolve_compute("cpu", "bf16").tag == "bf16"
    with pytest.raises(DeviceError, match="--precision fp16 needs a GPU"):
        resolve_compute("cpu", "fp16")
    with pytest.raises(DeviceError, match=r"--precision 'int4': use one of fp32, bf16, fp16"):
        Compute(torch.device("cpu"), "int4")


def test_to_device_leaves_a_tensor_already_there_alone():
    t = torch.ones(3)
    assert to_device(t, torch.device("cpu")) is t


def test_cli_refuses_a_missing_gpu_before_any_work(no_gpu, tmp_path, caplog):
    code = main(["run", "--upstream", "fbank", "--task", "ks", "--data", str(tmp_path / "nowhere"),
                 "--device", "cuda", "--no-store"])
    assert code == ExitCode.USAGE
    assert "error: --device cuda: this machine has no usable CUDA device" in caplog.text
    assert not (tmp_path / "nowhere").exists()


def test_bf16_features_are_cached_and_recorded_apart_from_fp32(no_gpu, tmp_path):
    make_class_corpus(tmp_path, task="ks")
    over = {"steps": 20, "eval_interval": 10, "batch_size": 8, "lr_grid": [1e-2]}
    records = {p: run(ToneUpstream(), [get_task("ks")], tmp_path,
                           scratch_run_options(tmp_path, overrides=over, precision=p))[0] for p in ("fp32", "bf16")}
    fp32, bf16 = records["fp32"], records["bf16"]
    assert (fp32.device, fp32.precision, bf16.device, bf16.precision) == ("cpu", "fp32", "cpu", "bf16")
    assert bf16.profile == fp32.profile + "+bf16" and bf16.run_key() != fp32.run_key()
    assert bf16.features_fingerprint == fp32.features_fingerprint + "-bf16"
    assert bf16.upstream_fingerprint == fp32.upstream_fingerprint  # the same model
    from superbench.features.keys import audio_keys
    from superbench.manifest import load_task_manifest

    manifest = load_task_manifest(tmp_path / "ks")
    keys = audio_keys(manifest)
    caches = {r.precision: FeatureCache.open(cache_path(ToneUpstream(), "utterance", tmp_path / "cache",
                                                        r.features_fingerprint), keys) for r in (fp32, bf16)}
    uid = manifest.splits["train"][0].id
    a, b = caches["fp32"].get(uid), caches["bf16"].get(uid)
    assert not np.array_equal(a, b)  # autocast really ran the forward in bf16...
    np.testing.assert_allclose(a, b, rtol=0.05, atol=0.05)  # ...and it is the same function
