"""Reference test: native `apc` / `vq_apc` against s3prl's own APC upstream on random-init checkpoints.

Runs only where s3prl is installed (`make reference-env`, then `make test-reference`). Each utterance
goes through s3prl alone (its expert preprocesses every utterance separately, so that is its answer for
the utterance); the native upstream gets the padded batch. Every layer's valid frames must agree within
ATOL (fp32). Measured on s3prl 0.4.18 / torch 2.9 CPU, max abs diff per layer: 3.1e-5, 3.1e-5, 3.4e-5
(apc and vq_apc alike); the fbank front end accounts for it.
"""

from __future__ import annotations

import pytest

from superbench.testing import chirp_wavs
from upstreams.apc import FACTORIES

pytestmark = pytest.mark.s3prl

ATOL = 1e-4
LENGTHS = (16000, 25600, 20320)  # 1.0, 1.6 and 1.27 s


@pytest.mark.parametrize("name", ["apc", "vq_apc"])
def test_every_layer_matches_s3prl(tmp_path, name, assert_matches_s3prl):
    factory = FACTORIES[name]
    file = factory.write_random_checkpoint(tmp_path / f"{name}.ckpt", seed=3)
    native = factory(path=str(file))
    assert (native.num_layers, native.receptive_field, native.downsample_rate) == (3, 400, 160)
    assert_matches_s3prl(native, "apc_local", file, chirp_wavs(LENGTHS, seed=0), ATOL, name)
