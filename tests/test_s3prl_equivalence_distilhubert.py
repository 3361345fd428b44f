"""Reference test: the native `distilhubert` against s3prl's own Distiller upstream (`distiller_local`) on
the same random-init s3prl checkpoint. Every hidden state must match over the frames both give (fp32,
1e-4 abs), in the same order."""

import pytest

from superbench.testing import chirp_wavs
from upstreams.distilhubert import FACTORIES

pytestmark = pytest.mark.s3prl

ATOL = 1e-4
LENGTHS = (16000, 20011, 25600)  # 1.0 to 1.6 s


@pytest.mark.parametrize("overrides", [
    {},
    {"extractor_mode": "layer_norm", "layer_norm_first": True, "activation_fn": "gelu_accurate", "conv_pos": 15},
    {"task_emb_type": "self-hidden", "out_layer_type": "none", "n_tasks": 3},
    {"n_tasks": 1, "pred_layer_id": [12], "out_layer_inter_dim": 16},
], ids=["distilhubert-tiny", "layernorm-prenorm", "self-hidden", "one-head"])
def test_every_layer_matches_s3prl(tmp_path, overrides, assert_matches_s3prl):
    factory = FACTORIES["distilhubert"]
    file = factory.write_random_checkpoint(tmp_path / "distiller.ckpt", seed=5, **overrides)
    native = factory(path=str(file))
    wavs = chirp_wavs(LENGTHS, noise=0.1)
    assert_matches_s3prl(native, "distiller_local", file, wavs, ATOL, f"distilhubert {overrides}")
