"""QbE: subsequence DTW, MTWV by hand, manifest checks, the QUESST 2014 preparer and a run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from downstreams.qbe import (
    BETA,
    GroundTruth,
    QbEHeadConfig,
    match,
    max_twv,
    mtwv,
    read_groundtruth,
    standardise,
    subsequence_dtw,
)
from recipes.prepare import PrepareError
from recipes.prepare.quesst14 import prepare_quesst14
from superbench.manifest import Fold, ManifestError, load_task_manifest, write_task_manifest
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import SR, TONES, ToneUpstream, scratch_run_options

# --------------------------------------------------------------------------- DTW


def test_beta_is_quesst_2014s():
    # C_fa / C_miss * (1 / P_target - 1) = 1 / 100 * (1 / 0.0008 - 1) = 0.01 * 1249
    assert BETA == pytest.approx(12.49)


def test_subsequence_dtw_by_hand():
    # g0 = d0 = [1, 0, 2]; g1[j] = d1[j] + min(g0[j], g0[j-1], g0[j-2]):
    #   j0: 3 + 1 = 4; j1: 1 + min(0, 1) = 1; j2: 0 + min(2, 0, 1) = 0  -> cost 0 / N=2 = 0, ends at frame 2
    cost, end = subsequence_dtw(torch.tensor([[1.0, 0.0, 2.0], [3.0, 1.0, 0.0]], dtype=torch.float64))
    assert cost.tolist() == [0.0] and end.tolist() == [2]
    # g0 = [2, 1, 3]; g1: j0 1 + 2 = 3; j1 2 + min(1, 2) = 3; j2 2 + min(3, 1, 2) = 3 -> 3 / 2 = 1.5 (first end)
    cost, end = subsequence_dtw(torch.tensor([[2.0, 1.0, 3.0], [1.0, 2.0, 2.0]], dtype=torch.float64))
    assert cost.tolist() == [1.5] and end.tolist() == [0]
    # padding columns (at or past the length) are never on a path: the 0s there are ignored
    cost, _ = subsequence_dtw(torch.tensor([[[2.0, 1.0, 3.0, 0.0], [1.0, 2.0, 2.0, 0.0]]], dtype=torch.float64),
                              torch.tensor([3]))
    assert cost.tolist() == [1.5]


def test_query_embedded_in_a_document_matches_exactly_where_it_is():
    rng = np.random.default_rng(0)
    query = torch.tensor(rng.standard_normal((6, 8)))
    before, after = torch.tensor(rng.standard_normal((5, 8))), torch.tensor(rng.standard_normal((4, 8)))
    doc = torch.cat([before, query, after])
    from downstreams.qbe import distance_matrices, minmax_rows

    dist = minmax_rows(distance_matrices(query, doc[None], "cosine_exp"), torch.tensor([doc.shape[0]]))
    cost, end = subsequence_dtw(dist)
    assert cost.item() == pytest.approx(0.0, abs=1e-12)
    assert end.item() == 5 + 6 - 1  # the query's last frame sits at document frame 10
    other = torch.tensor(rng.standard_normal((15, 8)))
    scores = match(query, [other, doc], QbEHeadConfig())
    assert scores[1] == pytest.approx(0.0, abs=1e-12) and scores[0] < -0.05  # score = -cost


def test_standardise_is_a_population_z_norm():
    z = standardise(np.array([1.0, 2.0, 3.0, 6.0]))  # mean 3, population std sqrt(14/4)
    assert z.tolist() == pytest.approx([(x - 3) / math.sqrt(3.5) for x in (1, 2, 3, 6)])
    assert standardise(np.zeros(3)).tolist() == [0.0, 0.0, 0.0]  # a short query's all-zero scores stay 0


def test_head_config_refuses_what_s3prl_refuses():
    with pytest.raises(ValueError, match="cosine_neg_log"):
        QbEHeadConfig(dist_method="cosine_neg_log", feature_normalization=True)
    with pytest.raises(ValueError, match="dist_method"):
        QbEHeadConfig(dist_method="dtw")


# --------------------------------------------------------------------------- MTWV


def _truth() -> GroundTruth:
    # A occurs in d1, d2; B in d3 and in one document outside the manifest: N_true 2 each.
    # 100 documents, and one more term with occurrences whose query is not in the manifest.
    return GroundTruth(terms=["A", "B"], hits={"A": {"d1", "d2"}, "B": {"d3"}}, missed={"B": 1}, documents=100,
                       unscored_terms=1)


def test_mtwv_by_hand():
    scores = {"A": {"d0": 0.8, "d1": 0.9, "d2": 0.5, "d3": -1.0},
              "B": {"d0": -1.0, "d1": -1.0, "d2": 0.6, "d3": 0.7}}
    # 3 terms averaged (A, B, the unscored one). A hit adds 1/N_true = 0.5; a false alarm subtracts
    # beta / (100 - 2) = 12.49 / 98 = 0.127449. Down the sorted scores, the sum of weights:
    #   0.9 A d1 hit  0.5 | 0.8 A d0 FA 0.372551 | 0.7 B d3 hit 0.872551 | 0.6 B d2 FA 0.745102
    #   0.5 A d2 hit  1.245102 | then only false alarms.  Max at 0.5: 1.245102 / 3 = 0.415034
    value, threshold = max_twv(scores, _truth())
    assert value == pytest.approx((1.5 - 2 * 12.49 / 98) / 3)
    assert threshold == 0.5
    assert mtwv(scores, _truth()) == pytest.approx(41.5034, abs=1e-4)  # percent


def test_mtwv_decides_ties_together_and_never_goes_below_no_detection():
    truth = GroundTruth(terms=["A"], hits={"A": {"d1"}}, documents=3)
    # A tie of a hit (+1) and a false alarm (-12.49 / 2) is one operating point: TWV 1 - 6.245 < 0, so the
    # best point is detecting nothing, TWV 0.
    assert max_twv({"A": {"d0": 1.0, "d1": 1.0, "d2": 0.0}}, truth) == (0.0, math.inf)
    # Broken tie: the hit alone first, TWV 1 (100 %).
    assert mtwv({"A": {"d0": 0.9, "d1": 1.0, "d2": 0.0}}, truth) == pytest.approx(100.0)


# --------------------------------------------------------------------------- manifest checks


def _wav(path: Path, seconds: float = 0.2, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)


def _row(root: Path, uid: str, **fields) -> dict:
    _wav(root / "audio" / f"{uid}.wav")
    return {"id": uid, "audio": f"audio/{uid}.wav", "sample_rate": SR, "num_samples": int(0.2 * SR),
            "speaker": "s", **fields}


def _small_manifest(root: Path, dev_truth: str = "hit a d0\n", queries: bool = True) -> Path:
    docs = [_row(root, f"d{k}", role="doc") for k in range(3)]
    dev = [_row(root, "q-a", role="query", term="a"), _row(root, "q-b", role="query", term="b")] if queries \
        else [_row(root, "x", role="doc")]
    test = [_row(root, "q-c", role="query", term="c")]
    root.mkdir(parents=True, exist_ok=True)
    (root / "groundtruth_dev.txt").write_text(dev_truth)
    (root / "groundtruth_test.txt").write_text("hit c d2\n")
    return write_task_manifest(root, task="qbe", corpus="t", version="1", label_field="role", labels=[],
                               splits={"docs": docs, "dev": dev, "test": test},
                               folds=[Fold("default", "docs", "dev", "test")],
                               sidecars=["groundtruth_dev.txt", "groundtruth_test.txt"])


def _check(folder: Path) -> None:
    get_task("qbe").check_manifest(load_task_manifest(folder))


def test_a_valid_manifest_passes_and_its_truth_counts(tmp_path):
    folder = _small_manifest(tmp_path / "qbe", "# comment\nhit a d0\nhit a d1  # two\nmissed b 2\ndocuments 7\n")
    _check(folder)
    truth = read_groundtruth(folder / "groundtruth_dev.txt", ["a", "b"], ["d0", "d1", "d2"])
    assert truth.true_count("a") == 2 and truth.true_count("b") == 2 and truth.documents == 7


def test_ground_truth_naming_an_unknown_document_names_file_and_line(tmp_path):
    folder = _small_manifest(tmp_path / "qbe", "hit a d0\nhit b d9\n")
    with pytest.raises(ManifestError, match=r"groundtruth_dev\.txt:2: document 'd9' is not a document"):
        _check(folder)


def test_ground_truth_naming_an_unknown_term_or_malformed_line(tmp_path):
    folder = _small_manifest(tmp_path / "qbe", "hit a d0\nhit zz d1\nhit a\n")
    with pytest.raises(ManifestError) as err:
        _check(folder)
    assert "groundtruth_dev.txt:2: term 'zz' is not the term of any query" in str(err.value)
    assert "groundtruth_dev.txt:3: expected 'hit <term> <doc>'" in str(err.value)


def test_query_without_a_term_names_file_and_line(tmp_path):
    folder = _small_manifest(tmp_path / "qbe")
    rows = [json.loads(line) for line in (folder / "dev.jsonl").read_text().splitlines()]
    del rows[1]["term"]
    (folder / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ManifestError, match=r"dev\.jsonl:2 \(id 'q-b'\): query without a term id"):
        _check(folder)


def test_a_split_without_queries_is_refused(tmp_path):
    folder = _small_manifest(tmp_path / "qbe", "", queries=False)
    with pytest.raises(ManifestError) as err:
        _check(folder)
    assert "dev.jsonl: no queries" in str(err.value)
    assert "dev.jsonl:1 (id 'x'): role 'doc', expected 'query'" in str(err.value)


def test_a_split_whose_terms_never_occur_is_refused(tmp_path):
    folder = _small_manifest(tmp_path / "qbe", "# nothing occurs\n")
    with pytest.raises(ManifestError, match="no term of this split occurs in any document"):
        _check(folder)


# --------------------------------------------------------------------------- QUESST 2014 preparer


def _quesst_layout(root: Path, rttm_extra: str = "") -> Path:
    for name in ("quesst14_00001", "quesst14_00002", "quesst14_00003"):
        _wav(root / "Audio" / f"{name}.wav", 0.5)
    _wav(root / "dev_queries" / "quesst14_dev_0001.wav")
    _wav(root / "eval_queries" / "quesst14_eval_0001.wav")
    scoring = root / "scoring"
    scoring.mkdir(parents=True)
    # English lines are kept (path's first component dropped); the Albanian ones (files absent) are not
    (scoring / "language_key_utterances.lst").write_text(
        "quesst14Database/Audio/quesst14_00001.wav nnenglish\nquesst14Database/Audio/quesst14_00002.wav nnenglish\n"
        "quesst14Database/Audio/quesst14_00009.wav albanian\nquesst14Database/Audio/quesst14_00003.wav nnenglish\n")
    (scoring / "language_key_dev.lst").write_text(
        "quesst14Database/dev_queries/quesst14_dev_0001.wav nnenglish\n"
        "quesst14Database/dev_queries/quesst14_dev_0002.wav albanian\n")
    (scoring / "language_key_eval.lst").write_text("quesst14Database/eval_queries/quesst14_eval_0001.wav nnenglish\n")
    for split, terms, rttm in (
            ("dev", ["quesst14_dev_0001", "quesst14_dev_0002"],
             "LEXEME quesst14_00001 1 0.000 1.000 quesst14_dev_0001 lex <NA> <NA>\n"
             "LEXEME quesst14_00001 1 2.000 1.000 quesst14_dev_0001 lex <NA> <NA>\n"
             "LEXEME quesst14_00009 1 0.000 1.000 quesst14_dev_0001 lex <NA> <NA>\n"
             "LEXEME quesst14_00009 1 0.000 1.000 quesst14_dev_0002 lex <NA> <NA>\n" + rttm_extra),
            ("eval", ["quesst14_eval_0001"], "LEXEME quesst14_00003 1 0.0 1.0 quesst14_eval_0001 lex <NA> <NA>\n")):
        gt = scoring / f"groundtruth_quesst14_{split}"
        gt.mkdir()
        (gt / f"quesst14_{split}.rttm").write_text(rttm)
        excerpts = "".join(f'<excerpt audio_filename="Audio/quesst14_{k:05d}.wav" channel="1" tbeg="0" dur="1"/>'
                           for k in range(1, 11))
        (gt / "quesst14.ecf.xml").write_text(f'<ecf source_signal_duration="10" version="1">{excerpts}</ecf>')
        (gt / f"quesst14_{split}.tlist.xml").write_text(
            "<termlist>" + "".join(f'<term termid="{t}"><termtext>x</termtext></term>' for t in terms)
            + "</termlist>")
    return root


def test_quesst14_preparer_writes_the_english_subset_and_its_truth(tmp_path):
    folder = prepare_quesst14(_quesst_layout(tmp_path / "quesst14Database"), tmp_path / "out")
    m = load_task_manifest(folder)
    assert [u.id for u in m.splits["docs"]] == ["quesst14_00001", "quesst14_00002", "quesst14_00003"]
    assert [u.targets["term"] for u in m.splits["dev"]] == ["quesst14_dev_0001"]
    assert [u.id for u in m.splits["test"]] == ["quesst14_eval_0001"]
    lines = [x for x in (folder / "groundtruth_dev.txt").read_text().splitlines() if not x.startswith("#")]
    # ten ECF documents; the Albanian term counts with TWV 0; two lines in 00001 are one (per-file) trial;
    # the occurrence in the Albanian document 00009 is a miss
    assert lines == ["documents 10", "unscored_terms 1", "hit quesst14_dev_0001 quesst14_00001",
                     "missed quesst14_dev_0001 1"]
    get_task("qbe").check_manifest(m)
    truth = read_groundtruth(folder / "groundtruth_dev.txt", ["quesst14_dev_0001"], [u.id for u in m.splits["docs"]])
    assert truth.scored_terms == 2 and truth.true_count("quesst14_dev_0001") == 2


def test_quesst14_preparer_names_a_malformed_line(tmp_path):
    root = _quesst_layout(tmp_path / "q", rttm_extra="LEXEME quesst14_00002 1\n")
    with pytest.raises(PrepareError, match=r"quesst14_dev\.rttm:5: a LEXEME line needs"):
        prepare_quesst14(root, tmp_path / "out")
    key = root / "scoring" / "language_key_eval.lst"
    key.write_text(key.read_text() + "just-one-field\n")
    with pytest.raises(PrepareError, match=r"language_key_eval\.lst:2: expected '<audio path> <language>'"):
        prepare_quesst14(root, tmp_path / "out")


# --------------------------------------------------------------------------- end to end


def _tones(freqs: list[float], rng: np.random.Generator) -> np.ndarray:
    seg = np.arange(int(0.1 * SR)) / SR
    return np.concatenate([0.3 * np.sin(2 * np.pi * f * seg + rng.uniform(0, 6.28)) for f in freqs]) \
        + 0.005 * rng.standard_normal(int(0.1 * SR) * len(freqs))


def _tone_qbe_corpus(root: Path) -> Path:
    """Words are three-tone sequences; documents hide one word (or none) among random tones."""
    rng = np.random.default_rng(0)
    words = {"w1": [TONES[0], TONES[3], TONES[1]], "w2": [TONES[5], TONES[2], TONES[4]],
             "w3": [TONES[1], TONES[5], TONES[0]], "w4": [TONES[4], TONES[0], TONES[2]]}
    folder = root / "qbe"
    rows: dict[str, list[dict]] = {"docs": [], "dev": [], "test": []}
    hits: dict[str, list[str]] = {"dev": [], "test": []}

    def add(split: str, uid: str, wav: np.ndarray, **fields) -> None:
        path = folder / "audio" / f"{uid}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wav.astype(np.float32), SR)
        rows[split].append({"id": uid, "audio": f"audio/{uid}.wav", "sample_rate": SR, "num_samples": len(wav),
                            "speaker": "", **fields})

    contents = ["w1", "w1", "w2", "w2", "w3", "w3", "w4", "w4", None, None, None, None]
    for k, word in enumerate(contents):
        filler = [TONES[int(i)] * 1.37 for i in rng.integers(0, len(TONES), 5)]  # off the words' tones
        at = int(rng.integers(0, 3))
        seq = filler[:at] + (words[word] if word else []) + filler[at:]
        add("docs", f"d{k:02d}", _tones(seq, rng), role="doc")
        if word:
            hits["dev" if word in ("w1", "w2") else "test"].append(f"hit {word} d{k:02d}")
    for word in words:
        split = "dev" if word in ("w1", "w2") else "test"
        add(split, f"q-{word}", _tones(words[word], rng), role="query", term=word)
    for split, lines in hits.items():
        (folder / f"groundtruth_{split}.txt").write_text("".join(x + "\n" for x in lines))
    write_task_manifest(folder, task="qbe", corpus="tones", version="1", label_field="role", labels=[], splits=rows,
                        folds=[Fold("default", "docs", "dev", "test")],
                        sidecars=["groundtruth_dev.txt", "groundtruth_test.txt"])
    return root


def test_qbe_runs_end_to_end_and_keeps_its_layer_and_detections(tmp_path):
    data = _tone_qbe_corpus(tmp_path / "data")
    [record] = run(ToneUpstream(), [get_task("qbe")], data, scratch_run_options(tmp_path))
    assert record.metric == "mtwv" and record.test > 0 and record.dev > 0
    [trial] = record.trials
    assert [layer for layer, _ in trial["history"]] == [0, 1, 2]  # every layer scored on dev
    best = max(trial["history"], key=lambda h: h[1])
    assert record.dev == pytest.approx(best[1])
    assert record.layer_weights == [1.0 if k == best[0] else 0.0 for k in range(3)]
    results = Path(record.artifacts["predictions"])
    lines = [json.loads(x) for x in (tmp_path / "results").rglob(results.name).__next__().read_text().splitlines()]
    assert [(x["split"], x["id"]) for x in lines] == [("dev", "q-w1"), ("dev", "q-w2"), ("test", "q-w3"),
                                                       ("test", "q-w4")]
    assert sorted(lines[0]["prediction"]) == [f"d{k:02d}" for k in range(12)]
    # the record's test MTWV is the MTWV of the test predictions written beside it
    task_dir = data / "qbe"
    truth = read_groundtruth(task_dir / "groundtruth_test.txt", ["w3", "w4"], [f"d{k:02d}" for k in range(12)])
    assert mtwv({x["reference"]: x["prediction"] for x in lines if x["split"] == "test"}, truth) \
        == pytest.approx(record.test, abs=1e-3)
    head = torch.load(next((tmp_path / "results").rglob("*.head.pt")), weights_only=True)
    assert int(head["layer"]) == best[0]
