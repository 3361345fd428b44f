import numpy as np
import torch

from downstreams import CTCHead
from recipes import load_recipe
from superbench.runner import upstream_for_recipe
from superbench.upstream import load_upstream


def test_frame_stacking_halves_time_and_lengths():
    head = CTCHead(1, 8, 5, proj_dim=4, rnn_dims=[3], frame_stack=2)
    out = head(torch.randn(1, 2, 11, 8), torch.tensor([11, 7]))
    assert out.shape == (2, 5, 5)  # 11 frames -> 5 stacked pairs
    assert head.output_lengths(torch.tensor([11, 7])).tolist() == [5, 3]
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 5), atol=1e-5)


def test_utterance_recipes_run_the_filterbank_baseline_without_cmvn():
    fbank = load_upstream("fbank")
    assert fbank.config.cmvn
    ks = upstream_for_recipe(fbank, load_recipe("ks", "fast"))
    assert not ks.config.cmvn and ks.name == "fbank" and ks.fingerprint() != fbank.fingerprint()
    assert upstream_for_recipe(fbank, load_recipe("pr", "fast")) is fbank
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(8000) * np.linspace(0.01, 0.5, 8000)).astype(np.float32)
    with_cmvn = fbank.extract([wav])[0][0][0].mean(0)
    without = ks.extract([wav])[0][0][0].mean(0)
    # CMVN zeroes every utterance mean (what a mean-pooling head sees); without it the mean carries information
    assert with_cmvn.abs().max() < 1e-4
    assert without.abs().max() > 1.0
