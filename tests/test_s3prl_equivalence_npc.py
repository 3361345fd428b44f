"""Reference test: native `npc` against s3prl's own NPC upstream on random-init checkpoints.

Runs only where s3prl is installed (`make reference-env`, then `make test-reference`). Each utterance
goes through s3prl alone (s3prl convolves a zero-padded batch, so a short utterance's last frames depend
on its batch-mates there; alone is its answer for the utterance); the native upstream gets the padded
batch. Every layer's valid frames, in s3prl's hook order, must agree within ATOL (fp32). Measured on
s3prl 0.4.18 / torch 2.9 CPU: at most 2.6e-5 (published layout), 2.4e-5 (disable_cross_layer), 3.4e-5 (tanh).
"""

from __future__ import annotations

import pytest

from superbench.testing import chirp_wavs
from upstreams.npc import FACTORIES, write_random_checkpoint

pytestmark = pytest.mark.s3prl

ATOL = 1e-4
LENGTHS = (16000, 25600, 20320)  # 1.0, 1.6 and 1.27 s


@pytest.mark.parametrize("paras", [{}, {"disable_cross_layer": True}, {"activate": "tanh", "residual": False}],
                         ids=["published-layout", "last-layer-mask-only", "tanh-no-residual"])
def test_every_layer_matches_s3prl(tmp_path, paras, assert_matches_s3prl):
    file = write_random_checkpoint(tmp_path / "npc.ckpt", seed=5, **paras)
    native = FACTORIES["npc"](path=str(file))
    assert (native.receptive_field, native.downsample_rate) == (400, 160)
    assert_matches_s3prl(native, "npc_local", file, chirp_wavs(LENGTHS, seed=1), ATOL, f"npc {paras}")
