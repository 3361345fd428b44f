"""`s3prl:<hub-name>`: any s3prl hub upstream, when the optional `s3prl` package is installed.

s3prl is imported lazily (never by core code). s3prl 0.4.18 predates torchaudio 2.9, which
removed `set_audio_backend`, the backend query functions and `torchaudio.sox_effects`; before
importing s3prl we add inert stand-ins for whichever of those are missing so the import succeeds
(feature extraction never needs them: superbench reads audio itself). s3prl also imports torchaudio
for every hub entry at once, yet PyPI's torchaudio does not load beside a CPU-only torch; when
torchaudio is missing or fails to load, a placeholder package takes its place, so the upstreams
that never touch torchaudio (HuBERT, wav2vec 2.0, WavLM, ...) still work and the others fail with
the load error when they first use it.

Frame counts: s3prl reports its own lengths (roughly n / downsample_rate). They are mapped onto
superbench's frame rule `(n - receptive_field) // downsample_rate + 1` by trimming the extra
frame(s) or repeating the last one, so every upstream obeys one contract.

Checking a native re-implementation against s3prl: `s3prl_layers_alone` gives s3prl's hidden states for
each utterance run alone, and `layer_differences` compares an upstream's padded-batch output with them,
layer by layer.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from superbench.torchaudio_compat import BACKEND_NOOPS, install_torchaudio_stand_in, is_placeholder, load_failure
from superbench.upstream import Upstream

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'superbench[s3prl]'"


class S3PRLNotInstalledError(RuntimeError):
    """The optional s3prl dependency is missing."""


def patch_torchaudio_for_s3prl() -> list[str]:
    """Make s3prl 0.4.18 importable beside today's torchaudio, or without a working one.

    Adds no-op versions of the torchaudio APIs s3prl touches at import time; when torchaudio is
    missing or does not load, installs the placeholder package first. Returns the names added.
    """
    try:
        import torchaudio
    except Exception as exc:  # absent, or PyPI's build beside a CPU-only torch (OSError)
        why = load_failure(exc)
        install_torchaudio_stand_in(why)
        log.warning("torchaudio %s; s3prl upstreams that use it will fail when they do", why)
        return ["torchaudio"]
    if is_placeholder(torchaudio):
        return []  # the placeholder already carries the no-op backend API
    added = []

    def _add(name: str, value: Any) -> None:
        if not hasattr(torchaudio, name):
            setattr(torchaudio, name, value)
            added.append(name)

    for name, value in BACKEND_NOOPS.items():
        _add(name, value)
    if "torchaudio.sox_effects" not in sys.modules:
        try:
            importlib.import_module("torchaudio.sox_effects")
        except Exception:
            sox = types.ModuleType("torchaudio.sox_effects")

            def _unavailable(*_args: Any, **_kwargs: Any) -> Any:
                raise RuntimeError("torchaudio.sox_effects is not available in this torchaudio version")

            sox.apply_effects_tensor = _unavailable
            sox.apply_effects_file = _unavailable
            sox.effect_names = lambda: []
            sox.init_sox_effects = lambda: None
            sox.shutdown_sox_effects = lambda: None
            sys.modules["torchaudio.sox_effects"] = sox
            torchaudio.sox_effects = sox
            added.append("sox_effects")
    if added:
        log.debug("added torchaudio shims for s3prl: %s", ", ".join(added))
    return added


def import_s3prl_nn() -> types.ModuleType:
    """`s3prl.nn`, or an error saying how to install it."""
    patch_torchaudio_for_s3prl()
    try:
        return importlib.import_module("s3prl.nn")
    except ImportError as exc:
        raise S3PRLNotInstalledError(
            f"the s3prl:NAME upstreams need the optional s3prl package ({exc}); install it with "
            f"`{INSTALL_HINT}`") from exc


class S3PRLUpstream(Upstream):
    """Adapter from `s3prl.nn.S3PRLUpstream` (all hidden states + lengths) to the superbench contract.

    Registered as the parametrised family `s3prl`: `s3prl:HUBNAME` builds `S3PRLUpstream("HUBNAME")`.
    """

    info = {"family": "s3prl hub", "layers": "per model", "hidden_size": "per model",
            "source": "s3prl:HUBNAME (pip install 'superbench[s3prl]')"}

    def __init__(self, name: str, path: str | None = None, receptive_field: int = 400,
                 per_utterance: bool = True, **kwargs: Any) -> None:
        super().__init__()
        # s3prl models see padding differently (HuBERT Base's GroupNorm normalises over it), so by
        # default each utterance runs alone and its features never depend on its batch-mates.
        self.per_utterance = bool(per_utterance)
        if path is not None and "://" not in str(path) and not Path(path).expanduser().exists():
            raise FileNotFoundError(f"upstream s3prl:{name}: checkpoint {path} does not exist")
        s3prl_nn = import_s3prl_nn()
        if path is not None:
            kwargs["path_or_url"] = path
        self.hub_name = name
        self.name = f"s3prl:{name}"
        self.model = s3prl_nn.S3PRLUpstream(name, **kwargs).eval()
        self.num_layers = int(self.model.num_layers)
        sizes = {int(s) for s in self.model.hidden_sizes}
        rates = {int(r) for r in self.model.downsample_rates}
        if len(sizes) != 1 or len(rates) != 1:
            raise ValueError(f"{self.name}: layers differ in size {sorted(sizes)} or rate {sorted(rates)}; "
                             f"a weighted sum over layers needs them equal")
        self.hidden_size = sizes.pop()
        self.downsample_rate = rates.pop()
        self.receptive_field = int(receptive_field)

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "s3prl_hub": self.hub_name, "per_utterance": self.per_utterance}

    def _s3prl(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], list[list[int]]]:
        """s3prl's hidden states (B, T', D) and its per-layer lengths."""
        out = self.model(wavs, wav_lengths)
        hidden, hidden_lens = (out["hidden_states"], out["hidden_states_len"]) if isinstance(out, dict) else out
        if len(hidden) != self.num_layers:
            raise RuntimeError(f"{self.name}: s3prl returned {len(hidden)} layers, announced {self.num_layers}")
        return list(hidden), [torch.as_tensor(n).tolist() for n in hidden_lens]

    def _forward(self, wavs: torch.Tensor, wav_lengths: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        frame_lengths = self.num_frames(wav_lengths)
        if self.per_utterance:
            runs = [self._s3prl(wavs[i: i + 1, :n], wav_lengths[i: i + 1]) for i, n in enumerate(wav_lengths.tolist())]
            # per layer, per utterance: (frames (T', D), s3prl's length)
            items = [[(h[layer][0], lens[layer][0]) for h, lens in runs] for layer in range(self.num_layers)]
        else:
            hidden, hidden_lens = self._s3prl(wavs, wav_lengths)
            items = [list(zip(h, n)) for h, n in zip(hidden, hidden_lens)]
        t_max = int(frame_lengths.max())
        layers = []
        for per_utt in items:
            fixed = torch.zeros(len(per_utt), t_max, per_utt[0][0].shape[-1], dtype=torch.float32)
            for i, (want, (h, got)) in enumerate(zip(frame_lengths.tolist(), per_utt)):
                got = min(int(got), h.shape[0])
                if got <= 0:
                    raise RuntimeError(f"{self.name}: s3prl returned no frames for batch index {i}")
                n = min(want, got)
                fixed[i, :n] = h[:n].float()
                if want > got:  # s3prl rounds down more than the frame rule: repeat the last frame
                    fixed[i, got:want] = h[got - 1].float()
            layers.append(fixed)
        return layers, frame_lengths


def s3prl_layers_alone(hub_name: str, ckpt_path: str | Path | None, wavs: Sequence[np.ndarray | torch.Tensor],
                       **kwargs: Any) -> list[list[torch.Tensor]]:
    """s3prl's own answer for each utterance: `[utterance][layer]` hidden states (T, D), each cut to the length
    s3prl reports, from `s3prl.nn.S3PRLUpstream(hub_name, path_or_url=ckpt_path, **kwargs)`.

    Each utterance runs alone: s3prl computes a zero-padded batch as one (GroupNorms over time, convolutions
    over the padding, a batch-wide front end), so what it gives an utterance in a batch depends on its
    batch-mates; alone, it is s3prl's answer for that utterance. Eval mode (s3prl leaves some upstreams in
    train mode, dropout on), no gradients.
    """
    s3prl_nn = import_s3prl_nn()
    if ckpt_path is not None:
        kwargs["path_or_url"] = str(ckpt_path)
    model = s3prl_nn.S3PRLUpstream(hub_name, **kwargs).eval()
    out = []
    with torch.no_grad():
        for wav in wavs:
            wav = torch.as_tensor(np.asarray(wav, dtype=np.float32))
            hidden, hidden_lens = model(wav[None], torch.tensor([wav.shape[0]]))
            out.append([h[0, : int(n[0])] for h, n in zip(hidden, hidden_lens)])
    return out


def layer_differences(upstream: Upstream, reference: Sequence[Sequence[torch.Tensor]],
                      wavs: Sequence[np.ndarray | torch.Tensor], *, max_extra_frames: int | None = None) -> list[float]:
    """Per layer, the largest absolute difference between `upstream` run on the padded batch of `wavs` and
    `reference[utterance][layer]` (T, D) (e.g. `s3prl_layers_alone`), over each utterance's valid frames.

    A native upstream must give every utterance in a padded batch what the reference gives it alone. Raises
    `AssertionError` where the two do not line up: another number of layers or hidden size, frame counts off
    the upstream's frame rule, or a reference with fewer frames than the upstream (s3prl's own lengths round
    up, so it may have more; `max_extra_frames` bounds how many more).
    """
    hidden, frame_lengths = upstream.extract(wavs)
    lengths = torch.tensor([len(w) for w in wavs])
    _expect(len(reference) == len(wavs), f"{len(reference)} reference utterances for {len(wavs)} waveforms")
    _expect(len(hidden) == upstream.num_layers,
            f"{upstream.name}: {len(hidden)} layers, announced {upstream.num_layers}")
    _expect(frame_lengths.tolist() == upstream.num_frames(lengths).tolist(),
            f"{upstream.name}: frame lengths {frame_lengths.tolist()} break the frame rule")
    worst = [0.0] * len(hidden)
    for i, ref_layers in enumerate(reference):
        _expect(len(ref_layers) == len(hidden),
                f"the reference has {len(ref_layers)} layers, the upstream {len(hidden)}")
        n = int(frame_lengths[i])
        for layer, (h, ref) in enumerate(zip(hidden, ref_layers)):
            _expect(ref.shape[-1] == h.shape[-1] == upstream.hidden_size,
                    f"layer {layer}: hidden size {ref.shape[-1]} in the reference, {h.shape[-1]} in the upstream "
                    f"(announced {upstream.hidden_size})")
            extra = ref.shape[0] - n
            _expect(extra >= 0,
                    f"utterance {i}: the reference gives fewer frames ({ref.shape[0]}) than the upstream ({n})")
            _expect(max_extra_frames is None or extra <= max_extra_frames,
                    f"utterance {i}: the reference gives {extra} frames more than the upstream ({n})")
            worst[layer] = max(worst[layer], float((h[i, :n].float() - ref[:n].float()).abs().max()))
    return worst


def _expect(ok: bool, message: str) -> None:
    if not ok:
        raise AssertionError(message)
