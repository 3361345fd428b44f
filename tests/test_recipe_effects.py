import numpy as np
import torch

from downstreams import CTCHead
from superbench.tasks import get_task
from superbench.upstream import load_upstream


def variant_for(upstream, task, profile="fast"):
    return upstream.variant(**get_task(task).load_recipe(profile).upstream.given())


def test_frame_stacking_halves_time_and_lengths():
    head = CTCHead(1, 8, 5, proj_dim=4, rnn_dims=[3], frame_stack=2)
    out = head(torch.randn(1, 2, 11, 8), torch.tensor([11, 7]))
    assert out.shape == (2, 5, 5)  # 11 frames -> 5 stacked pairs
    assert head.output_lengths(torch.tensor([11, 7])).tolist() == [5, 3]
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 5), atol=1e-5)


def test_utterance_recipes_run_the_filterbank_baseline_without_cmvn():
    fbank = load_upstream("fbank")
    assert fbank.config.cmvn
    ks = variant_for(fbank, "ks")
    assert not ks.config.cmvn and ks.name == "fbank" and ks.fingerprint() != fbank.fingerprint()
    assert variant_for(fbank, "pr") is fbank
    tiny = load_upstream("hubert-tiny-random")
    assert variant_for(tiny, "ks") is tiny  # an upstream without the option runs unchanged
    rng = np.random.default_rng(0)
    wav = (rng.standard_normal(8000) * np.linspace(0.01, 0.5, 8000)).astype(np.float32)
    with_cmvn = fbank.extract([wav])[0][0][0].mean(0)
    without = ks.extract([wav])[0][0][0].mean(0)
    # CMVN zeroes every utterance mean (what a mean-pooling head sees); without it the mean carries information
    assert with_cmvn.abs().max() < 1e-4
    assert without.abs().max() > 1.0


def test_fbank_records_share_one_fingerprint_across_cmvn_variants(tmp_path):
    import soundfile as sf

    from superbench.manifest import write_task_manifest
    from superbench.options import RunOptions
    from superbench.runner import run

    rng = np.random.default_rng(1)
    rows = []
    for i in range(8):
        sf.write(tmp_path / f"u{i}.wav", (rng.standard_normal(4000) * (0.05 + 0.1 * (i % 2))).astype(np.float32),
                 16000)
        rows.append({"id": f"u{i}", "audio": f"../u{i}.wav", "sample_rate": 16000, "num_samples": 4000,
                     "speaker": f"s{i % 2}", "label": f"s{i % 2}"})
    write_task_manifest(tmp_path / "sid", task="sid", corpus="t", version="1", label_field="label",
                        labels=["s0", "s1"], splits={"train": rows, "dev": rows, "test": rows})
    fbank = load_upstream("fbank")
    opts = RunOptions.of(results_dir=tmp_path / "results", progress=False, cache_root=tmp_path / "cache", profile="ci",
                         overrides={"steps": 5, "eval_interval": 5})
    (record,) = run(fbank, [get_task("sid")], tmp_path, opts)
    assert record.upstream == "fbank" and record.upstream_fingerprint == fbank.fingerprint()
    cached = [p.name for p in (tmp_path / "cache").iterdir()]
    nocmvn = variant_for(fbank, "sid", "ci").fingerprint()
    assert any(nocmvn in name for name in cached), cached
