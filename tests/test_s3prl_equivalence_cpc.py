"""Reference test: the native `modified_cpc` against s3prl's own CPC upstream (`cpc_local`) on the same
random-init CPC_audio checkpoint. Every hidden state must match over the frames both give (fp32, 1e-4 abs)."""

import pytest

from superbench.testing import chirp_wavs
from upstreams.cpc import FACTORIES

pytestmark = pytest.mark.s3prl

ATOL = 1e-4
LENGTHS = (16000, 21337, 25600 - 1)  # 1.0 to 1.6 s; the last one hits the dropped-extra-frame case


@pytest.mark.parametrize("overrides", [
    {},
    {"normMode": "batchNorm", "arMode": "GRU", "nLevelsGRU": 1},
    {"normMode": "instanceNorm", "cpc_mode": "reverse"},
    {"normMode": "ID", "arMode": "no_ar"},
], ids=["layernorm-lstm2", "batchnorm-gru", "instancenorm-reverse", "id-noar"])
def test_every_layer_matches_s3prl(tmp_path, overrides, assert_matches_s3prl):
    factory = FACTORIES["modified_cpc"]
    file = factory.write_random_checkpoint(tmp_path / "cpc.pt", seed=3, **overrides)
    native = factory(path=str(file))
    assert native.num_layers == 2
    wavs = chirp_wavs(LENGTHS, chirp=0.0, noise=0.1)  # white noise
    assert_matches_s3prl(native, "cpc_local", file, wavs, ATOL, f"modified_cpc {overrides}")
