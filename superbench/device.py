"""Where the upstream and the heads run (`--device`) and at which precision the upstream runs (`--precision`).

Everything is device-agnostic torch code; the only CUDA-specific steps are named here: pinned host
memory for the batches a CUDA head reads (`to_device`) and autocast's dtype per device (`Compute.autocast`).
Precision applies to the upstream's forward only (heads always train in float32): bf16/fp16 change the
features, so they are part of the cache identity and of the run key (`Compute.tag`); the device is not
(float32 on any device computes the same function) but every record names it.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Iterator

import torch

from superbench.options import PRECISIONS

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N|mps"
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class DeviceError(ValueError):
    """A `--device` / `--precision` this machine cannot honour; the message names the option to change."""


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """`auto` (CUDA when present, else Apple's MPS, else the CPU), `cpu`, `cuda`, `cuda:N` or `mps`,
    checked against this machine before any work."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        if _cuda_count():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match:
        count = _cuda_count()
        if not count:
            raise DeviceError(f"--device {spec}: this machine has no usable CUDA device (torch "
                              f"{torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu "
                              f"or auto")
        index = int(match.group(1) or torch.cuda.current_device())
        if index >= count:
            raise DeviceError(f"--device {spec}: only {count} CUDA device(s) here (cuda:0..cuda:{count - 1})")
        return torch.device("cuda", index)
    if text == "mps":
        if not _mps_available():
            raise DeviceError(f"--device {spec}: Apple's MPS backend is not available here; use --device cpu or auto")
        return torch.device("mps")
    raise DeviceError(f"--device {spec!r} is not a device: use {DEVICE_CHOICES}")


@dataclass(frozen=True)
class Compute:
    """The device of a run and the precision of its upstream forward."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise DeviceError(f"--precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.precision == "fp16" and self.device.type == "cpu":
            raise DeviceError("--precision fp16 needs a GPU (CPU autocast computes in bf16): use --precision bf16 "
                              "or fp32 on the CPU")

    @property
    def tag(self) -> str:
        """'' for fp32; else the precision, appended to cache fingerprints and run profiles."""
        return "" if self.precision == "fp32" else self.precision

    def describe(self) -> str:
        """The device as records keep it, e.g. 'cpu' or 'cuda:0 (NVIDIA H100 80GB HBM3)'."""
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype autocast computes the upstream's forward in: None for fp32 (no autocast), else bf16 or
        fp16 on any device (fp16 on the CPU is refused at construction: CPU autocast computes in bf16)."""
        return autocast_dtype(self.precision)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The upstream's forward at `precision` (a no-op for fp32)."""
        dtype = self.autocast_dtype
        if dtype is None:
            yield
            return
        with torch.autocast(device_type=self.device.type, dtype=dtype):
            yield


def autocast_dtype(precision: str) -> torch.dtype | None:
    """None for fp32, torch.bfloat16 for bf16, torch.float16 for fp16; another name is a DeviceError."""
    if precision == "fp32":
        return None
    if precision not in _DTYPES:
        raise DeviceError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    return _DTYPES[precision]


def resolve_compute(device: str | torch.device | None = "auto", precision: str | None = None) -> Compute:
    """A checked `Compute` from the CLI's spellings; precision defaults to fp32."""
    return Compute(resolve_device(device), (precision or "fp32").lower())


def pins(source: torch.device, target: torch.device) -> bool:
    """Whether a copy from `source` to `target` goes through pinned host memory: only host -> CUDA, where
    page-locked memory lets the copy run asynchronously (MPS and CPU targets gain nothing from it)."""
    return source.type == "cpu" and target.type == "cuda"


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`; host batches bound for CUDA go through pinned memory (an asynchronous copy;
    a tensor already pinned is not copied again to pin it)."""
    if tensor.device == device:
        return tensor
    if pins(tensor.device, device):
        pinned = tensor if tensor.is_pinned() else tensor.pin_memory()
        return pinned.to(device, non_blocking=True)
    return tensor.to(device)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch intra-op threads, then restore the previous count (None: leave it)."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
