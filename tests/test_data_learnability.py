"""The demo tasks are learnable but not trivial: an MFCC-mean linear probe sits between chance and 100 %."""

from __future__ import annotations

import numpy as np
import pytest

from recipes.prepare import demo
from superbench.audio import load_audio
from superbench.manifest import load_task_manifest


def _mfcc_mean_features():
    """Utterance means of the `mfcc` baseline's static coefficients."""
    from superbench.upstream import load_upstream

    # per-utterance CMVN would zero the very means the probe pools, so it is switched off here
    up = load_upstream("mfcc", cmvn=False)

    def feat(path):
        hidden, _ = up.extract([load_audio(path)])
        return hidden[-1][0, :, :13].mean(0).numpy()  # static coefficients (deltas average to ~0)

    return feat


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # the same SUPERBENCH_HOME as conftest's autouse fixture (which is not active yet at module scope),
    # so the tiny corpus is generated once per test session and shared
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUPERBENCH_HOME", str(tmp_path_factory.getbasetemp() / "superbench-home"))
        out = demo.ensure_demo("tiny")
    return out


@pytest.mark.parametrize("task", ["ks", "sid", "er"])
def test_mfcc_probe_is_above_chance_and_below_ceiling(corpus, task):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feat = _mfcc_mean_features()
    m = load_task_manifest(corpus / task)
    accs = []
    for fold in m.folds:
        xtr = np.stack([feat(u.audio) for u in m.splits[fold.train]])
        xte = np.stack([feat(u.audio) for u in m.splits[fold.test]])
        ytr = [u.label for u in m.splits[fold.train]]
        yte = [u.label for u in m.splits[fold.test]]
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(xtr, ytr)
        accs.append(probe.score(xte, yte))
    acc, chance = float(np.mean(accs)), 1 / len(m.labels)
    assert acc > 1.5 * chance, f"{task}: {acc:.3f} is not clearly above chance {chance:.3f}"
    assert acc < 0.95, f"{task}: {acc:.3f} is trivially easy"
