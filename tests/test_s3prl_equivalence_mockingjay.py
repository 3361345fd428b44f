"""Reference test: native Mockingjay / TERA against s3prl's own `mockingjay_local` / `tera_local` upstreams.

Random-init checkpoints in the published `.ckpt` layout; every hidden state of every utterance (each run
alone through s3prl, as the native upstream never lets batch-mates matter) must agree over the frames both
give. Tolerance: 1e-4 absolute for s3prl's `OnlinePreprocessor` front end (what the published checkpoints
use); 4e-4 for the Kaldi front end, whose log filterbank already differs from torchaudio's by ~1e-4 in
float32 before the Transformer (upstreams/filterbank.py).
"""

import pytest

from superbench.testing import chirp_wavs
from upstreams import mockingjay as mj

pytestmark = pytest.mark.s3prl

KALDI_AUDIO = {"kaldi": {"feat_type": "fbank", "fbank": {"num_mel_bins": 80, "frame_length": 25.0,
                                                         "frame_shift": 10.0, "use_log_fbank": True}},
               "delta": {"order": 2, "win_length": 5}, "cmvn": {"use_cmvn": True}}


def _config(family, *, seq=None, pre_ln=False, share=False, feat=None, audio=None):
    cfg = mj.tiny_config(family)
    if seq is not None:
        cfg["task"]["sequence_length"] = seq
    cfg["transformer"].update(pre_layer_norm=pre_ln, share_layer=share)
    if feat is not None:
        cfg["audio"]["input"] = {"channel": 0, **feat}
    if audio is not None:
        cfg["audio"] = audio
    return cfg


CASES = {
    # name: (hub entry, family, config, tolerance)
    "mockingjay": ("mockingjay_local", "mockingjay", None, 1e-4),
    "tera": ("tera_local", "tera", None, 1e-4),
    "preln-linear-deltas-chunked": ("tera_local", "tera", _config(
        "tera", seq=40, pre_ln=True, feat={"feat_type": "linear", "log": True, "delta": 2, "cmvn": True}), 1e-4),
    "mfcc-shared-layers": ("mockingjay_local", "mockingjay", _config(
        "mockingjay", share=True, feat={"feat_type": "mfcc", "log": False, "delta": 1, "cmvn": True}), 1e-4),
    "kaldi-fbank-chunked": ("tera_local", "tera", _config("tera", seq=60, audio=KALDI_AUDIO), 4e-4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_native_matches_s3prl(tmp_path, case, assert_matches_s3prl):
    hub, family, cfg, tol = CASES[case]
    file = mj.write_random_checkpoint(tmp_path / f"{case}.ckpt", family, seed=7, config=cfg)
    native = mj.FACTORIES[family](path=str(file))
    wavs = chirp_wavs((16000, 21111, 25600), seed=1234)  # 1.0-1.6 s
    # s3prl may give two frames more: its extra centred frame (or _match_length's) is left out here
    assert_matches_s3prl(native, hub, file, wavs, tol, case, max_extra_frames=2)
