"""Reference test: native wav2vec / vq-wav2vec against s3prl's own upstream on tiny random checkpoints.

Every hidden state's valid frames must agree within ATOL (fp32). s3prl runs each utterance alone
(its GroupNorms normalise over time, so a padded batch would mix utterances); the native upstream
runs the padded batch. s3prl reports ceil(n / 160) frames (copies of the last frame at the end);
the frames both have are compared.
"""

import pytest

from superbench.testing import chirp_wavs
from upstreams.s3prl_hub import S3PRLUpstream
from upstreams.wav2vec import FACTORIES, write_random_checkpoint

pytestmark = pytest.mark.s3prl

ATOL = 1e-4
LENGTHS = (16000, 21000, 25600)

# (factory name, s3prl hub entry, vq_type, config overrides)
CASES = {
    "wav2vec": ("wav2vec", "wav2vec_local", "none", {}),
    "wav2vec-zero-pad-no-bias-non-affine": ("wav2vec", "wav2vec_local", "none",
                                            {"agg_zero_pad": True, "no_conv_bias": True,
                                             "non_affine_group_norm": True, "activation": "gelu"}),
    "wav2vec-feature-skips-no-log": ("wav2vec", "wav2vec_local", "none",
                                     {"skip_connections_feat": True, "log_compression": False,
                                      "skip_connections_agg": False}),
    "vq_wav2vec": ("vq_wav2vec", "vq_wav2vec_custom", "gumbel", {}),
    "vq_wav2vec-gumbel-depth1-separate-groups": ("vq_wav2vec", "vq_wav2vec_custom", "gumbel",
                                                 {"vq_depth": 1, "combine_groups": False}),
    "vq_wav2vec_kmeans": ("vq_wav2vec_kmeans", "vq_wav2vec_custom", "kmeans", {}),
    "vq_wav2vec_kmeans-combined": ("vq_wav2vec_kmeans", "vq_wav2vec_custom", "kmeans",
                                   {"combine_groups": True, "vq_groups": 4}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_layer_matches_s3prl(case, tmp_path, assert_matches_s3prl):
    name, hub_name, vq_type, overrides = CASES[case]
    file = write_random_checkpoint(tmp_path / "model.pt", seed=3, vq_type=vq_type, **overrides)
    native = FACTORIES[name](path=str(file))
    reference = S3PRLUpstream(hub_name, path=str(file))  # one hidden size and one rate for all layers, or it raises
    geometry = ("num_layers", "hidden_size", "downsample_rate")
    assert [getattr(reference, a) for a in geometry] == [getattr(native, a) for a in geometry]
    # s3prl has ceil(len / 160) frames, the last ones repeated: the frames both have are compared
    assert_matches_s3prl(native, hub_name, file, chirp_wavs(LENGTHS, noise=0.1), ATOL, case)
