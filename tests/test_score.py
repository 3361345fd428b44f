import json
import math

import pytest

from leaderboard.score import (
    Reference,
    local_references,
    paper_references,
    superb_score,
)
from leaderboard.table import build_leaderboard
from superbench.records import ResultRecord
from superbench.tasks import TASKS

HUBERT_BASE = {"pr": 5.41, "ks": 96.30, "sid": 81.42, "er": 64.92, "asr": 6.42}


def rec(upstream, task, value, seed=0, recipe="1.0", profile="superb", layer=None, data="data-one"):
    spec = TASKS.get(task)
    return ResultRecord(upstream, f"fp-{upstream}", task, spec.metric, spec.higher_is_better, value, value,
                        seed, recipe, profile=profile, layer=layer, manifest_fingerprint=data)


def test_paper_references_are_the_published_points():
    refs = paper_references()
    assert {t: (r.fbank, r.sota) for t, r in refs.items()} == {
        "pr": (82.01, 3.53), "ks": (41.3826674, 96.66), "ic": (9.649354219, 98.76), "sid": (20.058174, 90.3),
        "er": (48.23672168, 67.62), "asr": (23.18, 3.62), "qbe": (0.58, 7.36), "sf": (69.64, 89.81),
        "sf/cer": (52.94, 21.76), "sv": (9.56, 5.11), "sd": (10.05, 5.62),
        # superbench's own SG score's points (tests/test_sg_score.py): the leaderboard's FBANK and WavLM Large rows
        "se": (2.55, 2.70043), "se/stoi": (93.6, 94.49), "ss": (9.2341, 11.1938), "st": (2.32, 26.5748)}
    # the leaderboard's points (its FBANK re-run for KS/IC/SID/ER); tests/test_official_score.py checks them
    assert all("superbbenchmark.org" in r.source and "Data.js" in r.source for r in refs.values()
               if r.task not in ("se", "ss", "st"))


def test_task_score_hand_computed():
    ref = Reference("ks", "acc", 40.0, 90.0)
    assert ref.score(40.0) == 0.0
    assert ref.score(90.0) == 1000.0
    assert ref.score(65.0) == pytest.approx(500.0)
    assert ref.score(30.0) == pytest.approx(-200.0)  # below FBANK is negative, not capped
    assert ref.score(95.0) == pytest.approx(1100.0)  # beyond SOTA exceeds 1000
    err = Reference("asr", "wer", 20.0, 4.0)  # error rate: SOTA is lower
    assert err.score(12.0) == pytest.approx(500.0)
    assert err.score(24.0) == pytest.approx(-250.0)


def test_hubert_base_worked_example():
    s = superb_score(HUBERT_BASE, paper_references())
    # per task: PR 976.05, KS 993.49, SID 873.58, ER 860.70, ASR 856.85 -> 912.1
    assert s.per_task["pr"] == pytest.approx(1000 * (5.41 - 82.01) / (3.53 - 82.01))
    assert s.score == pytest.approx(912.1, abs=0.1)
    assert s.tasks == ("pr", "ks", "sid", "er", "asr")
    assert s.n_tasks == 5
    assert "5 tasks" in s.label() and "paper" in s.label()


def test_subset_reports_its_task_set():
    s = superb_score({"ks": 96.30, "sid": 81.42}, paper_references())
    assert s.tasks == ("ks", "sid")
    assert s.score == pytest.approx((1000 * (96.30 - 41.3826674) / (96.66 - 41.3826674)
                                     + 1000 * (81.42 - 20.058174) / (90.3 - 20.058174)) / 2)


def test_local_references_use_fbank_and_best_upstream():
    means = {"fbank": {"ks": 50.0, "asr": 40.0}, "a": {"ks": 70.0, "asr": 20.0}, "b": {"ks": 90.0, "asr": 30.0}}
    refs = local_references(means)
    assert (refs["ks"].fbank, refs["ks"].sota) == (50.0, 90.0)
    assert (refs["asr"].fbank, refs["asr"].sota) == (40.0, 20.0)  # lower WER is best
    s = superb_score(means["a"], refs, reference="local")
    assert s.per_task == {"ks": pytest.approx(500.0), "asr": pytest.approx(1000.0)}
    assert s.score == pytest.approx(750.0)
    assert local_references({"a": {"ks": 1.0}}) == {}  # no fbank, no local reference


def test_leaderboard_table_scores_and_separates_profiles():
    records = [rec("hubert", t, v + d, seed) for t, v in HUBERT_BASE.items() for seed, d in ((0, -0.1), (1, 0.1))]
    records += [rec("hubert", "ks", 80.0, profile="fast")]
    board = build_leaderboard(records, reference="paper")
    f = board.frame
    assert len(f) == 2  # superb and fast profiles are separate rows, never averaged
    full = f[f["profile"] == "superb"].iloc[0]
    assert full["ks"] == pytest.approx(96.30)
    assert full["ks_std"] == pytest.approx(math.sqrt(0.02))  # sample std of +-0.1
    assert full["ks_n"] == 2
    assert full["score"] == pytest.approx(912.1, abs=0.1)
    assert full["tasks"] == "pr,ks,sid,er,asr"
    md = board.to_markdown()
    assert "KS ACC% ↑" in md and "ASR WER% ↓" in md and "SUPERB (paper ref)" in md
    assert "96.30 ± 0.14" in md
    assert any("different task sets" in n for n in board.notes)
    assert any("profile(s) ['fast']" in n for n in board.notes)


def test_leaderboard_local_mode_and_sorting():
    records = []
    for up, ks, asr in (("fbank", 50.0, 40.0), ("a", 70.0, 20.0), ("b", 90.0, 30.0)):
        records += [rec(up, "ks", ks), rec(up, "asr", asr)]
    board = build_leaderboard(records, reference="local")
    assert list(board.frame["label"]) == ["a", "b", "fbank"]  # 750, 750 -> label order, then 0
    assert list(board.frame["score"]) == pytest.approx([750.0, 750.0, 0.0])
    by_asr = build_leaderboard(records, reference="local", sort="asr")
    assert list(by_asr.frame["label"]) == ["a", "b", "fbank"]
    by_ks = build_leaderboard(records, reference="local", sort="ks")
    assert list(by_ks.frame["label"]) == ["b", "a", "fbank"]
    with pytest.raises(ValueError, match="cannot sort by 'nope'"):
        build_leaderboard(records, sort="nope")
    assert '"reference": "local"' in board.render("json")
    csv = board.render("csv").splitlines()
    assert csv[0].startswith("row,upstream,") and len(csv) == 4


def test_local_mode_explains_tasks_where_fbank_is_best():
    records = [rec("fbank", "ks", 60.0), rec("fbank", "er", 50.0), rec("a", "ks", 40.0), rec("a", "er", 55.0)]
    board = build_leaderboard(records, reference="local")
    assert any("no upstream beats 'fbank' on ks" in n for n in board.notes)
    scores = dict(zip(board.frame["label"], board.frame["score"]))
    assert scores["a"] == pytest.approx(1000.0)  # er only: (55-50)/(55-50)
    assert list(board.frame["tasks"]) == ["er", "er"]


def test_layer_probe_is_its_own_row():
    records = [rec("h", "ks", 90.0), rec("h", "ks", 60.0, layer=3)]
    board = build_leaderboard(records)
    assert sorted(board.frame["label"]) == ["h", "h [layer 3]"]


def test_two_corpora_are_separate_rows_with_their_own_local_references():
    records = []
    for data, fbank_ks, a_ks in (("1a2b3c4d9999", 50.0, 70.0), ("5e6f7a8b0000", 20.0, 30.0)):
        records += [rec("fbank", "ks", fbank_ks, data=data), rec("a", "ks", a_ks, seed=0, data=data),
                    rec("a", "ks", a_ks + 2, seed=1, data=data)]
    records.append(rec("b", "ks", 60.0, data="1a2b3c4d9999"))  # one corpus only: no data in its label
    board = build_leaderboard(records, reference="local")
    f = board.frame.set_index("label")
    assert len(f) == 5  # never averaged across corpora
    assert f.loc["a [data 1a2b3c4d]", "ks"] == pytest.approx(71.0)
    assert f.loc["a [data 5e6f7a8b]", "ks"] == pytest.approx(31.0)
    assert f.loc["b", "data"] == "1a2b3c4d9999"
    # local FBANK/SOTA per corpus: each corpus's best upstream scores 1000 on it
    assert f.loc["a [data 1a2b3c4d]", "score"] == pytest.approx(1000.0)
    assert f.loc["a [data 5e6f7a8b]", "score"] == pytest.approx(1000.0)
    assert f.loc["b", "score"] == pytest.approx(1000 * (60 - 50) / (71 - 50))
    assert f.loc["fbank [data 5e6f7a8b]", "score"] == pytest.approx(0.0)
    assert "| fbank [data 1a2b3c4d] |" in board.to_markdown()
    csv = board.render("csv").splitlines()
    assert csv[0].startswith("row,upstream,upstream_fingerprint,data,")
    assert any(line.startswith("a [data 5e6f7a8b],a,fp-a,5e6f7a8b0000,") for line in csv)
    rows = json.loads(board.render("json"))["rows"]
    assert {r["row"]: r["data"] for r in rows}["a [data 1a2b3c4d]"] == "1a2b3c4d9999"
    assert "<td>a [data 5e6f7a8b]</td>" in board.render("html")


def test_single_corpus_labels_do_not_show_data():
    board = build_leaderboard([rec("a", "ks", 70.0), rec("fbank", "ks", 50.0)], reference="local")
    assert sorted(board.frame["label"]) == ["a", "fbank"]
    assert not any("data data-one" in n for n in board.notes)


def test_local_sota_comes_from_every_scored_row_so_nothing_exceeds_1000():
    # the old bug: SOTA came from the first fingerprint of each upstream name among weighted-sum rows only,
    # so a second fingerprint (80) scored 1000*(80-50)/(70-50) = 1500 and the layer probe (90) 2000
    records = [rec("fbank", "ks", 50.0), rec("a", "ks", 70.0), rec("a", "ks", 90.0, layer=3)]
    records.append(ResultRecord("a", "fp-a2", "ks", "acc", True, 80.0, 80.0, 0, "1.0", profile="superb",
                                manifest_fingerprint="data-one"))
    board = build_leaderboard(records, reference="local")
    scores = dict(zip(board.frame["label"], board.frame["score"]))
    assert scores == {"a@fp-a [layer 3]": pytest.approx(1000.0), "a@fp-a2": pytest.approx(750.0),
                      "a@fp-a": pytest.approx(500.0), "fbank": pytest.approx(0.0)}
    assert any("probed layers and every fingerprint included" in n for n in board.notes)


def test_best_on_every_task_of_a_corpus_scores_exactly_1000():
    # every task has its own manifest fingerprint: one row still holds a model's tasks on one corpus
    records = []
    for up, ks, sid in (("fbank", 40.0, 20.0), ("a", 80.0, 60.0), ("b", 60.0, 40.0)):
        records += [rec(up, "ks", ks, data="ks-fp"), rec(up, "sid", sid, data="sid-fp")]
    board = build_leaderboard(records, reference="local")
    f = board.frame.set_index("label")
    assert len(f) == 3 and f.loc["a", "data"] == "ks-fp+sid-fp"
    assert f.loc["a", "score"] == pytest.approx(1000.0)
    assert f.loc["b", "score"] == pytest.approx(500.0)  # (500 + 500) / 2
    assert f.loc["b", "tasks"] == "ks,sid"


def demo(upstream, task, value, corpus="superbench-demo"):
    r = rec(upstream, task, value)
    r.corpus = corpus
    return r


def test_default_reference_follows_the_corpus_and_says_why():
    board = build_leaderboard([demo("fbank", "ks", 50.0), demo("a", "ks", 70.0)])
    assert board.reference == "local"
    assert any("reference = local by default" in n and "superbench-demo" in n for n in board.notes)
    assert "SUPERB (local ref)" in board.to_markdown()
    official = build_leaderboard([demo("a", "ks", 96.30, corpus="speech_commands")])
    assert official.reference == "paper" and any("reference = paper by default" in n for n in official.notes)
    assert build_leaderboard([rec("a", "ks", 96.30)]).reference == "paper"  # corpus unknown: paper
    assert build_leaderboard([demo("a", "ks", 70.0)], reference="paper").reference == "paper"  # explicit wins


def test_scores_that_round_to_zero_have_no_sign():
    records = [rec("fbank", "ks", 50.0), rec("a", "ks", 100.0), rec("c", "ks", 49.9999999)]  # c: -2e-6
    board = build_leaderboard(records, reference="local")
    assert dict(zip(board.frame["label"], board.frame["score"]))["c"] == pytest.approx(-2e-6)
    md = board.to_markdown()
    assert "| c | 1.0 | superb | 50.00 | 1 | 0.0 | 1: ks; not official: local ref |" in md and "-0.0" not in md
    assert "c,c,fp-c,data-one,1.0,superb,,50.0000,,1,0.0000,1,ks,local" in board.render("csv")
    assert "-0.0" not in board.render("csv") and "-0.0" not in board.render("html")
    assert '"value": -0.0,' not in board.render("json")


def test_tasks_under_different_recipe_versions_share_one_row_and_are_scored_locally():
    """Recipe versions are per task (ks at 2, er at 1): one model stays one row, its label lists them."""
    records = [rec(u, t, v, recipe=r, profile="fast", data=f"d-{t}")
               for u, vals in (("fbank", {"ks": 40.0, "er": 45.0}), ("good", {"ks": 80.0, "er": 65.0}))
               for (t, v), r in zip(vals.items(), ("2", "1"))]
    board = build_leaderboard(records, reference="local")
    f = board.frame
    assert sorted(f["upstream"]) == ["fbank", "good"]  # one row each, not one per recipe version
    assert set(f["recipe_version"]) == {"ks2 er1"}
    good = f[f["upstream"] == "good"].iloc[0]
    assert (good["ks"], good["er"], good["score"], good["n_tasks"]) == (80.0, 65.0, 1000.0, 2)
    assert board.recipe_of[records[0].run_key().as_tuple()] == "ks2 er1"
    # a second version of one task for the same model: rows never average across versions
    again = build_leaderboard(records + [rec("good", "ks", 90.0, recipe="3", profile="fast", data="d-ks")],
                              reference="local")
    mine = again.frame[again.frame["upstream"] == "good"]
    assert sorted(mine["recipe_version"]) == ["1", "2", "3"]  # nothing says which ks goes with er: apart
    assert sorted(mine["ks"].dropna().tolist()) == [80.0, 90.0]


def test_only_ten_paper_tasks_with_every_metric_make_the_official_score():
    refs = paper_references()
    fbank_all = {c: ref.fbank for c, ref in refs.items()}  # every paper metric at its FBANK point
    ten = superb_score(fbank_all, refs)
    assert set(ten.tasks) == {"pr", "ks", "ic", "sid", "er", "asr", "qbe", "sf", "sv", "sd"}
    assert ten.score == pytest.approx(0.0) and ten.official
    assert ten.short_scope() == "official" and "official SUPERB score (10 tasks" in ten.label()

    no_cer = superb_score({c: v for c, v in fbank_all.items() if c != "sf/cer"}, refs)
    assert not no_cer.official and no_cer.short_scope() == "not official: metric missing"
    five = superb_score(HUBERT_BASE, refs)
    assert not five.official and five.short_scope() == "not official: 5/10 SUPERB tasks"
    assert five.label().endswith("partial (5 of SUPERB's 10 tasks): not the official SUPERB score)")
    local = superb_score(fbank_all, refs, reference="local")
    assert not local.official and "local reference points: not the official SUPERB score" in local.label()
