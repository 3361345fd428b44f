"""SV (speaker verification): EER and minDCF, the x-vector head and AM-softmax, trial checks, the VoxCeleb1
preparer, the demo plan, the trial lists in the run identity, and a short run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from downstreams.verification import (
    TDNN,
    TDNN_SHRINK,
    SpeakerTarget,
    VerificationObjective,
    XVectorHead,
    am_softmax_loss,
    read_trials,
    score_trials,
    statistics_pooling,
)
from recipes.prepare import PrepareError
from superbench.manifest import ManifestError, load_task_manifest, write_task_manifest
from superbench.metrics import equal_error_rate, minimum_dcf
from superbench.records import read_record, record_path
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import SR, ToneUpstream, scratch_run_options

# --------------------------------------------------------------------------- metrics

# Four targets (0.9, 0.8, 0.6, 0.3) and four non-targets (0.7, 0.5, 0.2, 0.1). Accepting scores >= 0.6 rejects
# one target (0.3: FRR 1/4) and accepts one non-target (0.7: FAR 1/4): the ROC polyline passes through
# FAR = FRR = 25 % at that point, so EER = 25 %.
LABELS = [1, 1, 1, 1, 0, 0, 0, 0]
SCORES = [0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.2, 0.1]


def test_eer_hand_computed():
    assert equal_error_rate(LABELS, SCORES) == pytest.approx(25.0)
    # targets 0.9, 0.6; non-targets 0.8, 0.3, 0.2: ROC (FAR, TAR) (0, 1/2) -> (1/3, 1/2) -> (1/3, 1). The vertical
    # segment at FAR 1/3 crosses FAR = 1 - TAR (FRR goes 1/2 -> 0): EER = 1/3 (s3prl's interpolation)
    assert equal_error_rate([1, 1, 0, 0, 0], [0.9, 0.6, 0.8, 0.3, 0.2]) == pytest.approx(100 / 3)
    # a tie (target 0.5, non-target 0.5) is a diagonal segment (0, 1/2) -> (1/2, 1): it meets FAR = FRR at 1/4
    assert equal_error_rate([1, 1, 0, 0], [0.9, 0.5, 0.5, 0.1]) == pytest.approx(25.0)
    assert equal_error_rate([1, 0], [1.0, 0.0]) == 0.0 and equal_error_rate([1, 0], [0.0, 1.0]) == 100.0


def test_min_dcf_hand_computed():
    # p_target 0.5, unit costs: normalised DCF = P_miss + P_fa; its minimum over the ROC points of LABELS/SCORES
    # is 1/4 + 1/4 (accept >= 0.6) = 0.5, as is accepting >= 0.8 (miss 1/2, no false accept)
    assert minimum_dcf(LABELS, SCORES, p_target=0.5) == pytest.approx(0.5)
    # p_target 0.01: a false accept costs 99 times a miss; best is to accept the two top scores (0.9 and 0.8, both
    # targets): (0.01 * 2/4 + 0.99 * 0) / min(0.01, 0.99) = 0.5. With 0.8 a non-target (3 targets), accepting only
    # 0.9 is best: (0.01 * 2/3) / 0.01 = 2/3 (accepting 0.8 too would cost 0.99 * 1/3 / 0.01 = 33)
    assert minimum_dcf(LABELS, SCORES) == pytest.approx(0.5)
    assert minimum_dcf([1, 0, 1, 1, 0, 0], [0.9, 0.8, 0.6, 0.3, 0.2, 0.1]) == pytest.approx(2 / 3)


def test_eer_matches_s3prl_sklearn_interpolation():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq

    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(2, 50))
        labels = rng.integers(0, 2, n)
        labels[:2] = [1, 0]
        scores = np.round(rng.normal(size=n) + labels * rng.uniform(0, 2), 1)  # rounded: ties happen
        fpr, tpr, _ = sklearn_metrics.roc_curve(labels, scores)  # s3prl sv_voxceleb1/utils.py EER
        tpr_at = interp1d(fpr, tpr)
        expected = 100 * brentq(lambda x, tpr_at=tpr_at: 1.0 - x - tpr_at(x), 0.0, 1.0)
        assert equal_error_rate(labels, scores) == pytest.approx(expected, abs=1e-6)


def test_eer_refuses_one_class_and_bad_input():
    with pytest.raises(ValueError, match="got 2 target\\(s\\) and 0 non-target"):
        equal_error_rate([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="must be 0 or 1"):
        equal_error_rate([1, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="not finite"):
        equal_error_rate([1, 0], [0.1, float("nan")])


# --------------------------------------------------------------------------- head and loss

def test_am_softmax_loss_hand_computed():
    cosine = torch.tensor([[0.5, 0.1, -0.2], [0.0, 0.3, 0.6]])
    labels = torch.tensor([0, 2])
    # s = 30, m = 0.4. Row 0: target logit 30 (0.5 - 0.4) = 3, others 3 and -6: loss log(2 + e^-9).
    # Row 1: target 30 (0.6 - 0.4) = 6, others 0 and 9: loss -log(e^6 / (e^6 + 1 + e^9)) = log(1 + e^-6 + e^3).
    expected = (math.log(2 + math.exp(-9)) + math.log(1 + math.exp(-6) + math.exp(3))) / 2
    assert am_softmax_loss(cosine, labels).item() == pytest.approx(expected, rel=1e-6)
    # s3prl's AMSoftmaxLoss written out: numerator - log(exp(numerator) + sum_{j != y} exp(s cos_j))
    num = 30 * (cosine[[0, 1], labels] - 0.4)
    excl = torch.stack([torch.cat([cosine[i, :y], cosine[i, y + 1:]]) for i, y in enumerate(labels.tolist())])
    s3prl = -(num - torch.log(torch.exp(num) + torch.exp(30 * excl).sum(dim=1))).mean()
    assert am_softmax_loss(cosine, labels).item() == pytest.approx(s3prl.item(), rel=1e-6)


def test_tdnn_matches_s3prl_unfold():
    torch.manual_seed(0)
    layer = TDNN(4, 6, context=3, dilation=2)
    x = torch.randn(2, 9, 4)
    unfolded = F.unfold(x.unsqueeze(1), (3, 4), stride=(1, 4), dilation=(2, 1)).transpose(1, 2)  # s3prl's TDNN
    assert torch.allclose(layer(x), torch.relu(layer.kernel(unfolded)), atol=1e-6)
    assert layer(x).shape == (2, 9 - 4, 6)


def test_statistics_pooling_uses_valid_frames_and_a_silent_channel_has_a_finite_gradient():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 3)
    x[:, :, 2] = 0.0  # a ReLU channel silent over the whole utterance: deviation 0
    x.requires_grad_(True)
    pooled = statistics_pooling(x, torch.tensor([6, 4]))
    assert torch.allclose(pooled[1, :3], x[1, :4].mean(0)) and torch.allclose(pooled[1, 3:], x[1, :4].std(0))
    assert torch.allclose(pooled[0, 3:], x[0].std(0))
    pooled.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1, 4:] == 0).all()  # padding frames get no gradient


def test_xvector_head_embedding_ignores_padding_and_crops_only_in_training():
    torch.manual_seed(0)
    head = XVectorHead(2, 5, num_speakers=3, hidden_dim=8, agg_dim=12, max_train_frames=20).eval()
    short = torch.randn(2, 1, 25, 5)
    padded = torch.cat([short, torch.randn(2, 1, 15, 5)], dim=2)  # garbage after the end
    alone = head(short, torch.tensor([25])).embedding
    batched = head(torch.cat([padded, torch.randn(2, 1, 40, 5)], dim=1), torch.tensor([25, 40])).embedding
    assert torch.allclose(alone[0], batched[0], atol=1e-5)
    head.train()
    cropped, lengths = head.crop(torch.randn(2, 2, 40, 5), torch.tensor([40, 12]))
    assert cropped.shape == (2, 2, 20, 5) and lengths.tolist() == [20, 12]
    out = head(torch.randn(2, 4, 3 + TDNN_SHRINK, 5), torch.full((4,), 3 + TDNN_SHRINK))
    assert out.embedding.shape == (4, 8) and out.cosine.shape == (4, 3) and out.cosine.abs().max() <= 1 + 1e-6


# --------------------------------------------------------------------------- trials, checks, run identity

SPEAKERS = {"train": [("t0", 300.0), ("t1", 700.0), ("t2", 1500.0), ("t3", 2600.0)],
            "dev": [("d0", 450.0), ("d1", 2000.0)], "test": [("e0", 550.0), ("e1", 1800.0)]}


def make_sv_corpus(root: Path, per_speaker: int = 4, seed: int = 0) -> Path:
    """Tone "speakers" (a speaker is a base frequency, each utterance a random harmonic mix of it), train
    speakers disjoint from dev/test, and every pair of each held-out split as its trial list."""
    rng = np.random.default_rng(seed)
    task_dir = root / "sv"
    (task_dir / "wav").mkdir(parents=True, exist_ok=True)
    splits, trials = {}, {}
    for split, speakers in SPEAKERS.items():
        rows = []
        for spk, freq in speakers:
            for k in range(per_speaker):
                t = np.arange(int(rng.uniform(0.4, 0.7) * SR)) / SR
                wav = sum(rng.uniform(0.05, 0.2) * np.sin(2 * np.pi * freq * h * t) for h in (1, 2, 3))
                wav = (wav + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
                uid = f"{spk}-{k}"
                sf.write(task_dir / "wav" / f"{uid}.wav", wav, SR)
                rows.append({"id": uid, "audio": f"wav/{uid}.wav", "sample_rate": SR, "num_samples": wav.size,
                             "speaker": spk, "label": spk})
        splits[split] = rows
        if split != "train":
            trials[split] = [f"{int(a['label'] == b['label'])} {a['id']} {b['id']}"
                             for i, a in enumerate(rows) for b in rows[i + 1:]]
    for split, lines in trials.items():
        (task_dir / f"trials_{split}.txt").write_text("\n".join(lines) + "\n")
    speakers = sorted(spk for group in SPEAKERS.values() for spk, _ in group)
    return write_task_manifest(task_dir, task="sv", corpus="tones", version="1", label_field="label",
                               labels=speakers, splits=splits, allow_unseen_labels=True,
                               sidecars=["trials_dev.txt", "trials_test.txt"])


@pytest.fixture()
def sv_dir(tmp_path):
    return make_sv_corpus(tmp_path)


def _check(task_dir: Path) -> None:
    get_task("sv").check_manifest(load_task_manifest(task_dir))


def test_a_good_manifest_passes_and_the_trials_score(sv_dir):
    _check(sv_dir)
    trials = read_trials(sv_dir / "trials_test.txt")
    assert len(trials) == 28 and sum(t.label for t in trials) == 12  # 8 utterances: 28 pairs, 2 x 6 same-speaker
    # embeddings that put each speaker on its own axis score every target 1 and every non-target 0: EER 0
    axis = {"e0": [1.0, 0.0], "e1": [0.0, 1.0]}
    embeddings = {f"{s}-{k}": axis[s] for s in axis for k in range(4)}
    labels, scores = score_trials(trials, embeddings)
    assert equal_error_rate(labels, scores) == 0.0
    objective = VerificationObjective({"trials_dev.txt": read_trials(sv_dir / "trials_dev.txt"),
                                       "trials_test.txt": trials})
    targets = [SpeakerTarget(u, u.split("-")[0], -1) for u in embeddings]
    assert objective.score(targets, list(embeddings.values())) == 0.0
    assert objective.trials_for(set(embeddings))[0] == "trials_test.txt"
    with pytest.raises(ValueError, match="no trial list has all its utterances among the 2 scored ones"):
        objective.score(targets[:2], list(embeddings.values())[:2])


@pytest.mark.parametrize("content, error", [
    ("1 d0-0 d0-1\n1 d0-0\n", r"trials_dev.txt:2: expected '<1\|0> <utterance id> <utterance id>', got '1 d0-0'"),
    ("2 d0-0 d0-1\n", r"trials_dev.txt:1: expected"),
    ("1 d0-0 d0-1\n0 d0-0 d1-0\n1 d0-0 nope-3\n", r"trials_dev.txt:3: utterance id 'nope-3' is not in the manifest"),
    ("1 d0-0 d0-1\n1 d1-0 d1-1\n", r"trials_dev.txt: only target \(1\) trials; an equal error rate needs both"),
    ("1 d0-0 d0-1\n0 d0-0 t1-0\n", r"trials_dev.txt: scores dev.jsonl \(fold default\) but names 1 utterance\(s\) "
                                   r"of other splits, e.g. 't1-0' \(train.jsonl\)"),
])
def test_check_refuses_bad_trial_lists_before_extraction(sv_dir, content, error):
    (sv_dir / "trials_dev.txt").write_text(content)
    with pytest.raises(ManifestError, match=error):
        _check(sv_dir)


def test_trial_lists_must_exist_and_be_sidecars(sv_dir, tmp_path):
    (sv_dir / "trials_test.txt").unlink()
    with pytest.raises(ManifestError, match="trials_test.txt: sidecar file named in meta.json is missing"):
        load_task_manifest(sv_dir)
    other = make_sv_corpus(tmp_path / "other")
    meta = json.loads((other / "meta.json").read_text())
    del meta["sidecars"]
    (other / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ManifestError, match=r"trial list\(s\) trials_dev.txt, trials_test.txt are not among its "
                                            r"sidecars"):
        _check(other)


def test_a_changed_trial_list_changes_the_manifest_fingerprint(sv_dir):
    before = load_task_manifest(sv_dir).fingerprint
    lines = (sv_dir / "trials_test.txt").read_text().splitlines()
    (sv_dir / "trials_test.txt").write_text("\n".join(lines[:-1]) + "\n")  # one trial fewer, same rows
    after = load_task_manifest(sv_dir)
    assert after.fingerprint != before
    _check(sv_dir)  # still a valid manifest: only the identity changed


def test_sv_run_end_to_end_scores_the_trials_of_its_predictions(tmp_path):
    make_sv_corpus(tmp_path)
    overrides = {"head.hidden_dim": 16, "head.agg_dim": 24, "train.steps": 30, "train.eval_interval": 15,
                 "train.batch_size": 8, "train.lr_grid": [1e-3]}
    opts = scratch_run_options(tmp_path, overrides=overrides)
    (rec,) = run(ToneUpstream(), [get_task("sv")], tmp_path, opts)
    assert rec.metric == "eer" and not rec.higher_is_better and 0.0 <= rec.test <= 100.0
    folder = record_path(tmp_path / "results", rec.run_key()).parent
    assert read_record(record_path(tmp_path / "results", rec.run_key())).test == rec.test
    rows = [json.loads(line) for line in (folder / rec.artifacts["predictions"]).read_text().splitlines()]
    assert [r["split"] for r in rows] == ["dev"] * 8 + ["test"] * 8
    assert rows[0]["reference"] == ["d0-0", "d0", -1] and len(rows[0]["prediction"]) == 16
    test = {r["id"]: r["prediction"] for r in rows if r["split"] == "test"}
    again = equal_error_rate(*score_trials(read_trials(tmp_path / "sv" / "trials_test.txt"), test))
    assert again == pytest.approx(rec.test, abs=1e-3)  # the record's EER, from the saved embeddings


# --------------------------------------------------------------------------- VoxCeleb1 preparer

def _wav(path: Path, seconds: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)


def make_voxceleb1(root: Path) -> list[str]:
    for s in range(4):  # training-set speakers, 3 files each (2.1 s: above min_sec)
        for k in range(3):
            _wav(root / "wav" / f"id1000{s}" / f"v{k}" / "00001.wav", 2.1)
    _wav(root / "wav" / "id10000" / "v9" / "00001.wav", 1.5)  # 24000 samples: under min_sec
    trials = []
    for s in ("id10270", "id10271"):
        for k in range(2):
            _wav(root / "wav" / s / f"w{k}" / "00001.wav", 0.5)
    trials = ["1 id10270/w0/00001.wav id10270/w1/00001.wav", "0 id10270/w0/00001.wav id10271/w0/00001.wav",
              "1 id10271/w0/00001.wav id10271/w1/00001.wav", "0 id10270/w1/00001.wav id10271/w1/00001.wav"]
    (root / "veri_test2.txt").write_text("\n".join(trials) + "\n")
    return trials


def test_voxceleb1_sv_preparer(tmp_path):
    from recipes.prepare.voxceleb1 import prepare_voxceleb1_sv

    root = tmp_path / "vox1"
    make_voxceleb1(root)
    m = load_task_manifest(prepare_voxceleb1_sv(root, tmp_path / "out", dev_speakers=2, dev_trials=40, seed=3))
    get_task("sv").check_manifest(m)
    assert m.allow_unseen_labels and m.sidecars == ["trials_dev.txt", "trials_test.txt"]
    assert {u.id for u in m.splits["test"]} == {f"id1027{s}-w{k}-00001" for s in (0, 1) for k in (0, 1)}
    assert (m.root / "trials_test.txt").read_text().splitlines()[1] == "0 id10270-w0-00001 id10271-w0-00001"
    dev_speakers = {u.speaker for u in m.splits["dev"]}
    train_speakers = {u.speaker for u in m.splits["train"]}
    assert dev_speakers == set(m.extra["dev_speakers"]) and len(dev_speakers) == 2
    assert train_speakers == {f"id1000{s}" for s in range(4)} - dev_speakers
    assert all(u.num_samples > 32000 for u in m.splits["train"])
    if "id10000" in train_speakers:  # its short file is left out as s3prl's min_sec does
        assert m.extra["dropped"] and "id10000-v9-00001" not in {u.id for u in m.splits["train"]}
    dev = read_trials(m.root / "trials_dev.txt")
    assert len(dev) == 40 and {t.label for t in dev} == {0, 1} and all(t.a != t.b for t in dev)
    assert all((t.a.split("-")[0] == t.b.split("-")[0]) == bool(t.label) for t in dev)
    again = load_task_manifest(prepare_voxceleb1_sv(root, tmp_path / "out2", dev_speakers=2, dev_trials=40, seed=3))
    assert again.fingerprint == m.fingerprint  # seeded: the same dev speakers and trials


def test_voxceleb1_sv_preparer_names_bad_trial_lines(tmp_path):
    from recipes.prepare.voxceleb1 import prepare_voxceleb1_sv

    root = tmp_path / "vox1"
    trials = make_voxceleb1(root)
    (root / "veri_test2.txt").write_text("\n".join(trials + ["1 id10270/w0/00001.wav id10271/x/00009.wav",
                                                             "1 id10270/w0/00001.wav"]) + "\n")
    with pytest.raises(PrepareError) as info:
        prepare_voxceleb1_sv(root, tmp_path / "out", dev_speakers=2, dev_trials=10)
    assert f"veri_test2.txt:5: names a missing file {root / 'wav' / 'id10271/x/00009.wav'}" in str(info.value)
    assert "veri_test2.txt:6: expected '<1|0> <idXXXXX/video/n.wav> <idXXXXX/video/n.wav>'" in str(info.value)
    assert not (tmp_path / "out" / "sv").exists()  # nothing written
    with pytest.raises(FileNotFoundError, match="verification test list not found"):
        prepare_voxceleb1_sv(tmp_path / "nowhere", tmp_path / "out")


# --------------------------------------------------------------------------- demo plan

def test_demo_plan_has_unseen_speakers_and_balanced_trials():
    from recipes.prepare import demo

    plan = demo._Plan(demo.SIZES["tiny"], demo.Jitter(), np.random.default_rng(0), "tiny")
    rows = plan.rows["sv"]
    speakers = {split: {r["speaker"] for r in rows[split]} for split in rows}
    assert len(speakers["train"]) == 8 and not speakers["train"] & (speakers["dev"] | speakers["test"])
    assert not speakers["dev"] & speakers["test"]
    for split in ("dev", "test"):
        ids = {r["id"] for r in rows[split]}
        trials = [line.split() for line in plan.sv_trials[split]]
        assert all(a in ids and b in ids for _, a, b in trials)
        assert sum(t[0] == "1" for t in trials) == sum(t[0] == "0" for t in trials) == 3 * 3  # 3 speakers x C(3, 2)
    texts = [j["text"] for j in plan.jobs if j["id"].startswith("sv-")]
    others = {j["text"] for j in plan.jobs if not j["id"].startswith("sv-")}
    assert len(texts) == len(rows["train"]) + 2 * 9 and not set(texts) & others
