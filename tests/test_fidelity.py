"""s3prl fidelity options: class-balanced KS dev accuracy and the waveform gain variant of any upstream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from downstreams import ClassificationObjective, UtteranceHead
from superbench import metrics
from superbench.downstream import Objective
from superbench.recipe import RecipeError, TrainConfig, UpstreamOptions, build_section
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus
from superbench.training import evaluate, train
from superbench.upstream import GainUpstream, Upstream, as_upstream, load_upstream, pad_batch

# --------------------------------------------------------------------------- balanced accuracy

def test_balanced_accuracy_by_hand():
    refs = [0, 0, 0, 0, 1, 1, 2]
    preds = [0, 0, 0, 1, 0, 1, 1]
    # recalls: class 0 3/4, class 1 1/2, class 2 0/1 -> (0.75 + 0.5 + 0) / 3; plain accuracy 4/7
    assert metrics.balanced_accuracy(refs, preds) == pytest.approx(100 * 1.25 / 3)
    assert metrics.accuracy(refs, preds) == pytest.approx(100 * 4 / 7)
    assert metrics.balanced_accuracy(["a", "b"], ["a", "b"]) == 100.0
    # a class only predicted, never a reference, has no recall to average
    assert metrics.balanced_accuracy([0, 0], [0, 5]) == 50.0
    with pytest.raises(ValueError, match="balanced accuracy needs equal, non-empty lists"):
        metrics.balanced_accuracy([0], [])
    assert ClassificationObjective().balanced_score(refs, preds) == metrics.balanced_accuracy(refs, preds)


def test_balanced_accuracy_matches_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    refs = rng.integers(0, 5, 200).tolist()
    preds = [r if rng.random() < 0.6 else int(rng.integers(0, 5)) for r in refs]
    assert metrics.balanced_accuracy(refs, preds) == pytest.approx(
        100 * sklearn_metrics.balanced_accuracy_score(refs, preds))


def test_balanced_accuracy_is_the_expectation_of_a_class_balanced_resample():
    # s3prl's KS dev: WeightedRandomSampler(weights = N / count(class), N draws, with replacement)
    refs = [0] * 8 + [1] * 2
    preds = [0] * 6 + [1] * 2 + [1, 0]
    weights = torch.tensor([len(refs) / refs.count(r) for r in refs], dtype=torch.double)
    correct = torch.tensor([float(r == p) for r, p in zip(refs, preds)], dtype=torch.double)
    expected = float((weights / weights.sum() * correct).sum()) * 100  # expectation of one draw's correctness
    assert metrics.balanced_accuracy(refs, preds) == pytest.approx(expected) == pytest.approx(100 * (6 / 8 + 1 / 2) / 2)


def test_balanced_dev_selects_on_balanced_accuracy_and_keeps_plain_test_accuracy(tone_task):
    cache, data = tone_task
    ids, targets = data("dev")
    keep = [i for i, t in enumerate(targets) if t == 0 or i % 4 == 0]  # skewed dev: all of class 0, few others
    dev = ([ids[i] for i in keep], [targets[i] for i in keep])
    cfg = TrainConfig(steps=20, batch_size=8, lr=1e-2, eval_interval=5, seed=0, balanced_dev=True)

    def make_head():
        return UtteranceHead(3, 16, 3, proj_dim=8)

    result = train(make_head, ClassificationObjective(), cache, data("train"), dev, data("test"), cfg,
                   progress=False)
    assert result.dev == metrics.balanced_accuracy(dev[1], result.predictions["dev"])
    assert result.test == metrics.accuracy(data("test")[1], result.predictions["test"])
    head = make_head()
    head.load_state_dict(result.head_state)
    assert evaluate(head, ClassificationObjective(), cache, *dev, balanced=True)[0] == result.dev
    assert evaluate(head, ClassificationObjective(), cache, *dev)[0] == metrics.accuracy(dev[1],
                                                                                          result.predictions["dev"])


def test_balanced_dev_without_a_balanced_score_is_refused_before_training(tone_task):
    cache, data = tone_task

    class PlainObjective(Objective):  # the base's balanced_score is None: not defined
        metric, higher_is_better = "acc", True
        loss, predict, score = (ClassificationObjective.loss, ClassificationObjective.predict,
                                ClassificationObjective.score)

    class NoSource:
        def batch(self, ids):
            raise AssertionError("no feature should be read")

    cfg = TrainConfig(steps=5, batch_size=4, lr=1e-2, eval_interval=5, balanced_dev=True)
    with pytest.raises(ValueError, match="balanced_dev is set but PlainObjective has no balanced_score"):
        train(lambda: UtteranceHead(3, 16, 3, proj_dim=8), PlainObjective(), NoSource(), data("train"),
              data("dev"), data("test"), cfg, progress=False)


# --------------------------------------------------------------------------- gain variant

def _waves(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in (4000, 2500)]


def test_gain_variant_is_the_upstream_on_scaled_audio_with_its_own_fingerprint():
    base = ToneUpstream()
    assert base.variant(gain_db=0.0) is base and base.variant() is base and base.variant(gain_db=None) is base
    quieter = base.variant(gain_db=-3.0)
    assert isinstance(quieter, GainUpstream) and quieter.scale == 10 ** (-3 / 20)
    assert (quieter.name, quieter.num_layers, quieter.hidden_size) == (base.name, base.num_layers, base.hidden_size)
    wavs, lengths = pad_batch(_waves())
    got, got_lengths = quieter(wavs, lengths)
    want, want_lengths = base(wavs * 10 ** (-3 / 20), lengths)
    assert torch.equal(got_lengths, want_lengths)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    assert not torch.allclose(got[0], base(wavs, lengths)[0][0])  # the gain reaches the features
    fingerprints = {base.fingerprint(), quieter.fingerprint(), base.variant(gain_db=-6.0).fingerprint()}
    assert len(fingerprints) == 3
    assert quieter.fingerprint() == ToneUpstream().variant(gain_db=-3.0).fingerprint()  # a content hash
    assert quieter.variant(gain_db=0.0) is base  # a recipe's gain replaces, never stacks on, a variant's
    assert quieter.variant(gain_db=-3.0) is quieter


def test_gain_composes_with_fbank_cmvn():
    fbank = load_upstream("fbank")
    both = fbank.variant(cmvn=False, gain_db=-3.0)
    no_cmvn = fbank.variant(cmvn=False)
    assert isinstance(both, GainUpstream) and both.inner.config.cmvn is False
    wavs, lengths = pad_batch(_waves(1))
    got, _ = both(wavs, lengths)
    want, _ = no_cmvn(wavs * 10 ** (-3 / 20), lengths)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    # log-mel without CMVN shifts by log(gain^2) per band: the gain is visible to KS's pooled head
    plain, _ = no_cmvn(wavs, lengths)
    assert not torch.allclose(got[0], plain[0])
    assert len({fbank.fingerprint(), no_cmvn.fingerprint(), both.fingerprint(),
                fbank.variant(gain_db=-3.0).fingerprint()}) == 4


def test_gain_reaches_upstreams_with_their_own_variant_and_plain_objects():
    class Optioned(ToneUpstream):
        def specific_variant(self, **options):
            assert "gain_db" not in options  # taken out before the upstream's own variant runs
            return ToneUpstream(sleep=0.0) if options.get("fresh") else self

    up = Optioned()
    v = up.variant(fresh=True, gain_db=-3.0)
    assert isinstance(v, GainUpstream) and type(v.inner) is ToneUpstream
    assert up.variant(gain_db=0.0) is up

    class Plain(torch.nn.Module):
        num_layers, hidden_size = 3, 16

        def __init__(self):
            super().__init__()
            self.tone = ToneUpstream()

        def forward(self, wavs, wav_lengths):
            return self.tone(wavs, wav_lengths)

    wrapped = as_upstream(Plain())
    quieter = wrapped.variant(gain_db=-3.0)
    wavs, lengths = pad_batch(_waves(2))
    assert torch.equal(quieter(wavs, lengths)[0][1], wrapped(wavs * 10 ** (-3 / 20), lengths)[0][1])
    assert isinstance(Upstream().variant(gain_db=-1.0), GainUpstream)


def test_recipes_ask_for_s3prl_ks_gain_and_balanced_dev_in_the_superb_profile_only():
    ks = get_task("ks")
    superb = ks.load_recipe("superb")
    assert superb.upstream.given() == {"cmvn": False, "gain_db": -3.0}
    assert superb.train.balanced_dev and superb.train.balanced_sampling and superb.train.eval_interval == 5000
    for profile in ("fast", "ci"):
        r = ks.load_recipe(profile)
        assert "gain_db" not in r.upstream.given() and not r.train.balanced_dev
    for task in ("pr", "asr", "sid", "er"):
        for profile in ("superb", "fast", "ci"):
            r = get_task(task).load_recipe(profile)
            assert "gain_db" not in r.upstream.given() and not r.train.balanced_dev
    with pytest.raises(RecipeError, match="gain_db must be a number, got 'loud'"):
        build_section(UpstreamOptions, {"gain_db": "loud"}, "ks: upstream")
    assert ks.load_recipe("ci").with_overrides({"upstream.gain_db": -3}).upstream.given()["gain_db"] == -3.0


def test_the_runner_runs_and_keys_the_features_of_the_gain_variant(tmp_path):
    from superbench.task_plan import plan_task
    from superbench.testing import scratch_run_options

    make_class_corpus(tmp_path, task="ks")
    up = ToneUpstream()
    plain = plan_task(up, get_task("ks"), tmp_path, scratch_run_options(tmp_path))
    gained = plan_task(up, get_task("ks"), tmp_path, scratch_run_options(tmp_path, overrides={"upstream.gain_db": -3}))
    assert plain.upstream is up and plain.upstream_fingerprint == plain.model_fingerprint
    assert isinstance(gained.upstream, GainUpstream) and gained.upstream.gain_db == -3.0
    assert gained.model_fingerprint == plain.model_fingerprint  # the same model ...
    # ... other features
    assert gained.upstream_fingerprint == gained.upstream.fingerprint() != plain.upstream_fingerprint
