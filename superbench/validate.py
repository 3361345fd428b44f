"""Check that an upstream keeps the contract in `superbench.upstream`, on short synthetic audio.

Run it on every new model before benchmarking: a silently padding-dependent or
non-deterministic upstream poisons cached features and every score computed from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from superbench.upstream import ContractUpstream, Upstream, as_upstream, pad_batch

DEFAULT_ATOL = 1e-4
#: Every check, in the order they run and are reported.
CHECK_NAMES = ("attributes", "forward", "layer count", "shapes and dtype", "frame lengths", "finite values",
               "determinism", "batch vs single", "padding invariance", "too-short input")
#: What to look at when a check fails, shown under it: the usual cause, in the upstream's code.
HINTS = {
    "attributes": "declare name, sample_rate = 16000 and positive int num_layers, hidden_size, downsample_rate, "
                  "receptive_field (input samples of the first frame) as attributes",
    "forward": "forward(wavs (B, S) float32, wav_lengths (B,)) must return (list of num_layers tensors (B, T, D), "
               "frame_lengths (B,)); the error above comes from your forward",
    "layer count": "return one (B, T, hidden_size) tensor per layer, exactly num_layers of them (every hidden "
                   "layer, the input embedding included if you count it)",
    "shapes and dtype": "each layer must be a float32 (batch, frames, hidden_size) tensor: check the axis order "
                        "and cast half precision with .float()",
    "frame lengths": "return frames = (n - receptive_field) // downsample_rate + 1 (Upstream.num_frames), and "
                     "declare the receptive_field and downsample_rate your model really has",
    "finite values": "look for log(0), division by zero or half-precision overflow in forward",
    "determinism": "call .eval() (dropout off) and keep random operations out of forward",
    "batch vs single": "features change with the other clips in the batch: normalise each clip over its own "
                       "wav_lengths samples, never over the padded batch",
    "padding invariance": "frames of the real audio change with padding: zero or mask padded samples (from "
                          "wav_lengths) before convolutions, normalisation and attention",
    "too-short input": "raise ValueError naming the receptive field for clips shorter than it "
                       "(Upstream.forward does this for subclasses)",
}


@dataclass
class Check:
    """One contract check: `passed` is None when it could not run because an earlier step failed."""

    name: str
    passed: bool | None
    detail: str = ""

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]

    @property
    def hint(self) -> str:
        """What to look at, for a failed check ('' otherwise)."""
        return HINTS.get(self.name, "") if self.passed is False else ""


def synthetic_waveforms(upstream: Upstream, seed: int = 0) -> list[np.ndarray]:
    """Three clips: 1 s, an odd length between frames, and exactly one receptive field."""
    rng = np.random.default_rng(seed)
    sr = int(getattr(upstream, "sample_rate", 16000) or 16000)
    rf = int(getattr(upstream, "receptive_field", 400) or 400)
    ds = int(getattr(upstream, "downsample_rate", 160) or 160)
    lengths = [sr, max(rf, sr // 2) + 3 * ds + ds // 3 + 1, rf]
    wavs = []
    for n in lengths:
        t = np.arange(n) / sr
        tone = sum(0.2 / k * np.sin(2 * np.pi * f * t + k) for k, f in enumerate((180.0, 440.0, 1250.0), 1))
        wavs.append((tone + 0.05 * rng.standard_normal(n)).astype(np.float32))
    return wavs


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor], rows: slice | int, frames: int,
              b_row: int = 0) -> tuple[float, float]:
    """Largest absolute difference over layers for one utterance, and the scale it is judged against."""
    diff, scale = 0.0, 1.0
    for x, y in zip(a, b):
        xa, yb = x[rows, :frames], y[b_row, :frames]
        diff = max(diff, float((xa - yb).abs().max()))
        scale = max(scale, float(xa.abs().max()))
    return diff, scale


def _attribute_check(up: Upstream) -> Check:
    problems = []
    if not isinstance(getattr(up, "name", None), str) or not up.name:
        problems.append("name must be a non-empty string")
    if getattr(up, "sample_rate", None) != 16000:
        problems.append(f"sample_rate is {getattr(up, 'sample_rate', None)!r}, must be 16000")
    for attr in ("num_layers", "hidden_size", "downsample_rate", "receptive_field"):
        value = getattr(up, attr, None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            problems.append(f"{attr} is {value!r}, must be a positive int")
    if not problems and up.receptive_field < up.downsample_rate:
        problems.append(f"receptive_field {up.receptive_field} < downsample_rate {up.downsample_rate}")
    detail = "; ".join(problems) or (
        f"{up.num_layers} layers x {up.hidden_size}, {up.downsample_rate} samples/frame, "
        f"receptive field {up.receptive_field}")
    if isinstance(up, ContractUpstream):
        detail += f"; not an Upstream subclass, wrapped{_defaults(up)}"
    return Check("attributes", not problems, detail)


def _defaults(up: ContractUpstream) -> str:
    return f" (defaults: {', '.join(f'{a}={getattr(up, a)}' for a in up.defaulted)})" if up.defaulted else ""


def validate_upstream(upstream: Upstream | Any, atol: float = DEFAULT_ATOL, seed: int = 0) -> list[Check]:
    """Run every contract check; never raises for a misbehaving upstream, it reports instead.

    Any object that keeps the contract is accepted (`as_upstream` wraps a non-subclass).
    """
    try:
        up = as_upstream(upstream)
    except ValueError as exc:
        return _skip_the_rest([Check("attributes", False, str(exc))], "not an upstream", None, too_short=False)
    checks = [_attribute_check(up)]
    if not checks[0].passed:
        return _skip_the_rest(checks, "attributes are invalid", up, too_short=False)

    wavs = synthetic_waveforms(up, seed)
    batch, lengths = pad_batch(wavs)
    try:
        hidden, frame_lengths = up(batch, lengths)
        hidden = list(hidden)
        checks.append(Check("forward", True, f"batch of {len(wavs)} clips, lengths {lengths.tolist()} samples"))
    except Exception as exc:  # report, do not crash: this is a diagnostic tool
        checks.append(Check("forward", False, f"{type(exc).__name__}: {exc}"))
        return _skip_the_rest(checks, "forward failed", up)

    checks.append(Check("layer count", len(hidden) == up.num_layers,
                        f"{len(hidden)} hidden states, num_layers = {up.num_layers}"))
    expected = up.num_frames(lengths)
    frame_lengths = torch.as_tensor(frame_lengths)
    shape_problems = []
    for i, h in enumerate(hidden):
        if not isinstance(h, torch.Tensor) or h.dim() != 3:
            shape_problems.append(f"layer {i}: not a 3-D tensor")
            continue
        if h.shape[0] != len(wavs) or h.shape[2] != up.hidden_size or h.shape[1] < int(expected.max()):
            shape_problems.append(f"layer {i}: shape {tuple(h.shape)}, expected "
                                  f"({len(wavs)}, >={int(expected.max())}, {up.hidden_size})")
        if h.dtype != torch.float32:
            shape_problems.append(f"layer {i}: dtype {h.dtype}, expected float32")
    checks.append(Check("shapes and dtype", not shape_problems,
                        "; ".join(shape_problems[:3]) or f"(B, T, D) = {tuple(hidden[0].shape)}, float32"))
    lengths_ok = frame_lengths.shape == expected.shape and bool((frame_lengths.long() == expected).all())
    checks.append(Check("frame lengths", lengths_ok,
                        f"got {frame_lengths.tolist()}, rule (n - {up.receptive_field}) // "
                        f"{up.downsample_rate} + 1 gives {expected.tolist()}"))
    if shape_problems:
        return _skip_the_rest(checks, "shapes are wrong", up)

    bad = [i for i, h in enumerate(hidden) if not bool(torch.isfinite(h).all())]
    checks.append(Check("finite values", not bad, f"NaN/Inf in layers {bad}" if bad else "all finite"))

    checks.append(_compare("determinism", lambda: up(batch, lengths)[0], hidden, expected, atol,
                           "second call on the same batch"))

    worst, worst_detail, failed = 0.0, "", False
    try:
        for i, wav in enumerate(wavs):
            single, _ = up.extract([wav])
            n = int(expected[i])
            diff, scale = _max_diff(hidden, list(single), i, n)
            if diff > atol * scale:
                failed = True
            if diff / scale >= worst:
                worst, worst_detail = diff / scale, f"clip {i}: max |diff| {diff:.2e} (scale {scale:.2g})"
        checks.append(Check("batch vs single", not failed, worst_detail + f", tolerance {atol:g} x scale"))
    except Exception as exc:
        checks.append(Check("batch vs single", False, f"{type(exc).__name__}: {exc}"))

    extra = up.receptive_field + 7 * up.downsample_rate + 3
    padded = torch.nn.functional.pad(batch, (0, extra))
    checks.append(_compare("padding invariance", lambda: up(padded, lengths)[0], hidden, expected, atol,
                           f"{extra} extra zero samples of padding"))
    checks.append(_too_short_check(up))
    return checks


def _skip_the_rest(checks: list[Check], reason: str, up: Upstream | None, too_short: bool = True) -> list[Check]:
    """Report the checks not run yet as skipped; the too-short check needs no forward output, so it runs."""
    done = {c.name for c in checks}
    for name in CHECK_NAMES:
        if name in done:
            continue
        run = name == "too-short input" and too_short and up is not None
        checks.append(_too_short_check(up) if run else Check(name, None, reason))
    return checks


def _compare(name: str, run: Callable[[], list[torch.Tensor]], reference: list[torch.Tensor],
             frames: torch.Tensor, atol: float, what: str) -> Check:
    try:
        other = list(run())
    except Exception as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}")
    if len(other) != len(reference):
        return Check(name, False, f"{len(other)} layers instead of {len(reference)}")
    worst, worst_scale, ok = -1.0, 1.0, True
    for i, n in enumerate(frames.tolist()):
        diff, scale = _max_diff(reference, other, i, int(n), b_row=i)
        ok = ok and diff <= atol * scale
        if diff / scale > worst / worst_scale:
            worst, worst_scale = diff, scale
    return Check(name, ok, f"{what}: max |diff| {worst:.2e} (tolerance {atol:g} x {worst_scale:.2g})")


def _too_short_check(up: Upstream) -> Check:
    n = up.receptive_field - 1
    try:
        up(torch.zeros(1, n), torch.tensor([n]))
    except ValueError as exc:
        message = str(exc)
        clear = any(word in message.lower() for word in ("short", "receptive", "samples", "length"))
        return Check("too-short input", clear,
                     f"{n} samples -> ValueError: {message}" if clear else
                     f"ValueError without a useful message: {message!r}")
    except Exception as exc:
        return Check("too-short input", False, f"{n} samples -> {type(exc).__name__} (expected ValueError): {exc}")
    return Check("too-short input", False, f"{n} samples (< receptive field) gave output instead of an error")


def format_checks(checks: list[Check]) -> str:
    """A plain-text pass/fail table; under each failed check, what to look at."""
    width = max(len(c.name) for c in checks)
    lines = [f"{'check':<{width}}  result  detail", f"{'-' * width}  ------  ------"]
    for c in checks:
        lines.append(f"{c.name:<{width}}  {c.status:<6}  {c.detail}")
        if c.hint:
            lines.append(f"{'':<{width}}  {'':<6}  -> {c.hint}")
    passed = sum(c.passed is True for c in checks)
    lines.append(f"{passed}/{len(checks)} checks passed")
    return "\n".join(lines)


def all_passed(checks: list[Check]) -> bool:
    return all(c.passed is True for c in checks)


__all__ = ["Check", "HINTS", "validate_upstream", "format_checks", "all_passed", "synthetic_waveforms"]
