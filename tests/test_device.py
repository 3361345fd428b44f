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


# --------------------------------------------------------------------------- CUDA branches reachable on a CPU

def test_autocast_dtype_per_precision():
    from superbench.device import autocast_dtype

    assert autocast_dtype("fp32") is None
    assert autocast_dtype("bf16") is torch.bfloat16 and autocast_dtype("fp16") is torch.float16
    with pytest.raises(DeviceError, match=r"--precision 'fp8': use one of fp32, bf16, fp16"):
        autocast_dtype("fp8")
    assert Compute(torch.device("cuda", 0), "fp16").autocast_dtype is torch.float16  # fp16 is fine on a GPU
    assert Compute(torch.device("cpu"), "bf16").autocast_dtype is torch.bfloat16
    assert Compute().autocast_dtype is None


def test_fp32_autocast_is_a_no_op_and_bf16_computes_in_bf16_on_the_cpu():
    x = torch.ones(2, 3)
    with Compute(torch.device("cpu"), "fp32").autocast():
        assert (x @ x.T).dtype is torch.float32
    with Compute(torch.device("cpu"), "bf16").autocast():
        assert (x @ x.T).dtype is torch.bfloat16


def test_only_host_to_cuda_copies_are_pinned():
    from superbench.device import pins

    cpu, cuda, mps = torch.device("cpu"), torch.device("cuda", 0), torch.device("mps")
    assert pins(cpu, cuda)
    assert not pins(cpu, cpu) and not pins(cpu, mps) and not pins(cuda, cpu) and not pins(cuda, torch.device("cuda", 1))


class _FakeTensor:
    """Stands in for a host tensor: records how `to_device` moves it (no CUDA needed)."""

    def __init__(self, pinned: bool = False):
        self.device, self.pinned, self.calls = torch.device("cpu"), pinned, []

    def is_pinned(self) -> bool:
        return self.pinned

    def pin_memory(self) -> "_FakeTensor":
        self.calls.append("pin_memory")
        return _FakeTensor(pinned=True)

    def to(self, device, non_blocking: bool = False):
        self.calls.append(("to", str(device), non_blocking))
        return self


def test_to_device_pins_a_host_batch_bound_for_cuda_and_copies_asynchronously():
    host = _FakeTensor()
    moved = to_device(host, torch.device("cuda", 0))
    assert host.calls == ["pin_memory"] and moved.pinned and moved.calls == [("to", "cuda:0", True)]
    already = _FakeTensor(pinned=True)
    to_device(already, torch.device("cuda", 0))
    assert already.calls == [("to", "cuda:0", True)]  # pinned once, not again
    other = _FakeTensor()
    to_device(other, torch.device("mps"))
    assert other.calls == [("to", "mps", False)]


def test_describe_names_the_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert Compute(torch.device("cuda", 0)).describe() == "cuda:0 (NVIDIA H100 80GB HBM3)"
    assert Compute(torch.device("cpu")).describe() == "cpu"
