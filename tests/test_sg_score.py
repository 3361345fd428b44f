"""superbench's own SUPERB-SG aggregate (the "SG score") beside the SUPERB score: the SUPERB score never counts
SE or SS; the SG score averages them with the same formula, its paper points being the SUPERB leaderboard's FBANK
and WavLM Large rows, and says everywhere that it is superbench's own. Expected numbers are computed by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from leaderboard.compare import compare_models
from leaderboard.published import PublishedError, read_published_csv, shipped_files
from leaderboard.report import build_report
from leaderboard.score import (
    OOD_ASR_HEADER,
    OOD_ASR_SCOPE,
    OOD_ASR_TASKS,
    SG_SCOPE,
    SUPERB_SG_TASKS,
    default_reference,
    local_references,
    ood_asr_interval,
    ood_asr_mean,
    paper_references,
    score_interval,
    sg_score,
    superb_score,
    task_stream,
)
from leaderboard.store import ResultStore
from leaderboard.table import build_leaderboard
from superbench.cli import main
from superbench.records import ResultRecord
from superbench.tasks import TASKS, task_groups
from superbench.uncertainty import RESAMPLES, UnitScores, bootstrap

# the paper points of the SG score, as the SUPERB leaderboard's public.json gives its FBANK and WavLM Large rows
PESQ = (2.55, 2.70043)
STOI = (93.6, 94.49)
SISDRI = (9.2341, 11.1938)
KS = (41.3826674, 96.66)  # the SUPERB score's KS points


def points(value: float, ref: tuple[float, float]) -> float:
    return 1000 * (value - ref[0]) / (ref[1] - ref[0])


def units(values: list[float]) -> dict:
    """A metric's per-utterance values, as SE/SS records keep them (statistic "mean")."""
    ids = [f"u{i:03d}" for i in range(len(values))]
    return UnitScores.build("mean", "utterance", ids, {"value": values}).to_dict()


def rec(upstream: str, task: str, value: float, secondary: dict[str, float] | None = None,
        per_unit: dict[str, list[float]] | None = None, corpus: str = "superbench-demo") -> ResultRecord:
    """A record; with `per_unit` (metric -> values) its values are those units' means."""
    spec = TASKS.get(task)
    secondary = dict(secondary or {})
    kept = {}
    for metric, values in (per_unit or {}).items():
        kept[metric] = [units(values)]
        mean = float(np.mean(values))
        if metric == spec.metric:
            value = mean
        else:
            secondary[metric] = mean
    return ResultRecord(upstream, f"fp-{upstream}", task, spec.metric, spec.higher_is_better, value, value, 0, "1",
                        profile="ci", corpus=corpus, manifest_fingerprint=f"d-{task}",
                        secondary={m: {"dev": v, "test": v} for m, v in secondary.items()}, units=kept)


def test_the_sg_tasks_and_their_paper_points_are_declared():
    assert SUPERB_SG_TASKS == ("se", "ss", "st", "ood_es", "ood_zh", "ood_ar", "ood_sbcsae", "vc")
    assert OOD_ASR_TASKS == tuple(task_groups()["ood_asr"])  # the aggregate's tasks are the --task group
    refs = paper_references()
    # ST's points are the shipped published table's FBANK row and its best row (public.json's ST_bleu_public)
    st = {r.upstream: r.value for r in read_published_csv(shipped_files()["superb-sg-paper"]) if r.task == "st"}
    assert (refs["st"].fbank, refs["st"].sota) == (st["FBANK"], max(st.values())) == (2.32, 26.5748)
    assert max(st, key=st.get) == "WavLM Large"
    assert not set(OOD_ASR_TASKS) & set(refs)  # SUPERB-SG gives no per-task OOD-ASR leaderboard points
    assert (refs["se"].fbank, refs["se"].sota) == PESQ
    assert (refs["se/stoi"].fbank, refs["se/stoi"].sota) == STOI
    assert (refs["ss"].fbank, refs["ss"].sota) == SISDRI
    # SUPERB-SG's table reports SE as PESQ + STOI and SS as SI-SDRi: the other metrics have no point
    assert not {"se/sisdri", "ss/stoi", "ss/pesq"} & set(refs)
    for column in ("se", "se/stoi", "ss", "st"):
        assert "superbench's choice" in refs[column].source and "not an official definition" in refs[column].source
        assert "public.json (commit 2935745)" in refs[column].source


def test_the_sg_corpora_default_to_paper_points():
    assert default_reference(["voicebank-demand"])[0] == "paper"
    assert default_reference(["libri2mix"])[0] == "paper"
    assert default_reference(["superbench-demo"])[0] == "local"


def test_the_superb_score_never_counts_se_or_ss():
    metrics = {"ks": 96.30, "se": 2.625, "se/stoi": 94.0, "ss": 10.0}
    s = superb_score(metrics, paper_references())
    assert s.tasks == ("ks",) and s.score == pytest.approx(points(96.30, KS))
    assert not s.missing and not s.partial
    means = {"fbank": {"ks": 50.0, "se": 2.0}, "a": {"ks": 70.0, "se": 3.0}, "b": {"ks": 90.0, "se": 2.5}}
    local = superb_score(means["a"], local_references(means), reference="local")
    assert local.tasks == ("ks",) and local.score == pytest.approx(500.0)
    only_sg = superb_score({"se": 2.625, "ss": 10.0}, paper_references())
    assert only_sg.tasks == () and math.isnan(only_sg.score) and only_sg.label() == "n/a"


def test_the_sg_score_in_paper_mode_by_hand():
    metrics = {"ks": 96.30, "se": 2.625, "se/stoi": 94.0, "se/sisdri": 12.0, "ss": 10.0, "ss/stoi": 90.0,
               "ss/pesq": 3.0}
    s = sg_score(metrics, paper_references())
    se = (1000 * (2.625 - 2.55) / (2.70043 - 2.55) + 1000 * (94.0 - 93.6) / (94.49 - 93.6)) / 2
    ss = 1000 * (10.0 - 9.2341) / (11.1938 - 9.2341)
    assert s.tasks == ("se", "ss") and s.suite == "sg"
    assert s.per_task == {"se": pytest.approx(se), "ss": pytest.approx(ss)}
    assert s.score == pytest.approx((se + ss) / 2)
    assert s.metrics == ("se", "se/stoi", "ss") and not s.partial  # SE/SI-SDRi, SS/STOI, SS/PESQ not counted
    # the label says what it is, and never calls it official
    assert not s.official
    assert s.scope() == f"{SG_SCOPE}; paper reference points"
    assert SG_SCOPE == "superbench's own SUPERB-SG aggregate (SUPERB-SG defines no overall score)"
    assert s.short_scope() == "superbench's own SG aggregate"
    for text in (s.scope(), s.short_scope(), s.label()):
        assert "official" not in text
    # a row without SE's STOI is scored on PESQ alone, and says so
    no_stoi = sg_score({"se": 2.625}, paper_references())
    assert no_stoi.score == pytest.approx(1000 * (2.625 - 2.55) / (2.70043 - 2.55))
    assert no_stoi.partial_text() == "se: pesq only, no stoi"


def sg_records() -> list[ResultRecord]:
    """fbank, a and b on KS, SE and SS (demo corpus: local references by default)."""
    out = []
    for up, ks, se, ss in (("fbank", 50.0, (2.0, 80.0, 5.0), (4.0, 70.0, 1.5)),
                           ("a", 70.0, (2.5, 90.0, 8.0), (10.0, 75.0, 2.0)),
                           ("b", 90.0, (3.0, 85.0, 6.0), (8.0, 80.0, 2.5))):
        out += [rec(up, "ks", ks), rec(up, "se", se[0], {"stoi": se[1], "sisdri": se[2]}),
                rec(up, "ss", ss[0], {"stoi": ss[1], "pesq": ss[2]})]
    return out


def test_the_table_keeps_the_two_scores_apart_in_local_mode():
    board = build_leaderboard(sg_records())
    assert board.reference == "local"  # the demo corpus
    f = board.frame.set_index("label")
    # SUPERB score: KS only (FBANK 50, SOTA 90)
    assert f.loc["a", "score"] == pytest.approx(500.0) and f.loc["a", "tasks"] == "ks"
    assert f.loc["b", "score"] == pytest.approx(1000.0)
    # SG score, local points: SE PESQ (2.0, 3.0), SE STOI (80, 90), SS SI-SDRi (4, 10); the metrics SUPERB-SG
    # reports (SE: PESQ + STOI, SS: SI-SDRi), as in paper mode
    assert f.loc["a", "sg_score"] == pytest.approx(((500 + 1000) / 2 + 1000) / 2)
    assert f.loc["b", "sg_score"] == pytest.approx(((1000 + 500) / 2 + 1000 * (8 - 4) / (10 - 4)) / 2)
    assert f.loc["fbank", "sg_score"] == pytest.approx(0.0)
    assert f.loc["a", "sg_tasks"] == "se,ss" and f.loc["a", "sg_metrics"] == "se,se/stoi,ss"
    assert f.loc["a", "sg_scope"] == f"{SG_SCOPE}; local reference points"
    md = board.to_markdown()
    header = md.splitlines()[0]
    assert "| SUPERB (local ref) |" in header and "| SG score (local ref) | SG tasks |" in header
    assert "| 875.0 | 2: se,ss |" in md
    assert sum(SG_SCOPE in n for n in board.notes) == 1
    note = next(n for n in board.notes if SG_SCOPE in n)
    assert "se: pesq+stoi, ss: sisdri" in note and "never counts" in note and "local reference points" in note
    # the SUPERB score's note on several metrics leaves SE/SS to the SG note
    assert not any("se: pesq" in n for n in board.notes if n.startswith("SUPERB score"))
    row = next(r for r in json.loads(board.render("json"))["rows"] if r["row"] == "a")
    assert row["superb_score"]["tasks"] == ["ks"]
    assert row["sg_score"] == {"value": 875.0, "tasks": ["se", "ss"], "metrics": ["se", "se/stoi", "ss"],
                               "partial": "", "reference": "local", "scope": f"{SG_SCOPE}; local reference points"}
    assert "official" not in json.dumps(row["sg_score"])
    csv = board.render("csv").splitlines()
    assert "sg_score" in csv[0].split(",") and "sg_tasks" in csv[0].split(",")
    assert [r["row"] for r in json.loads(build_leaderboard(sg_records(), sort="sg").render("json"))["rows"]] == [
        "a", "b", "fbank"]


def test_no_sg_column_without_an_sg_task():
    board = build_leaderboard([rec("fbank", "ks", 50.0), rec("a", "ks", 70.0)])
    assert "SG score" not in board.to_markdown() and "sg_score" not in board.render("csv").splitlines()[0]
    assert all("sg_score" not in r for r in json.loads(board.render("json"))["rows"])
    assert not any(SG_SCOPE in n for n in board.notes)


def test_the_sg_score_has_its_interval_over_the_sg_tasks_units():
    rng = np.random.default_rng(0)
    records = []
    for up, shift in (("fbank", 0.0), ("a", 0.3)):
        records += [rec(up, "se", 0.0, per_unit={"pesq": list(2.0 + shift + 0.2 * rng.random(40)),
                                                 "stoi": list(80.0 + 30 * shift + rng.random(40))}),
                    rec(up, "ss", 0.0, per_unit={"sisdri": list(5.0 + 10 * shift + rng.random(40))})]
    board = build_leaderboard(records, reference="paper")
    a = board.frame.set_index("label").loc["a"]
    assert math.isnan(a["score"]) and a["tasks"] == ""  # no SUPERB task
    sg = next(s for s, label in zip(board.sg_scores, board.frame["label"]) if label == "a")
    by_hand = score_interval({"se": [folds_of(records, "a", "se", "pesq")],
                              "se/stoi": [folds_of(records, "a", "se", "stoi")],
                              "ss": [folds_of(records, "a", "ss", "sisdri")]}, paper_references(), "paper",
                             suite="sg")
    assert a["sg_score"] == pytest.approx(sg.score) == pytest.approx(by_hand.value)
    assert (a["sg_score_ci_low"], a["sg_score_ci_high"]) == pytest.approx((by_hand.low, by_hand.high), abs=1e-4)
    assert a["sg_score_ci_low"] < a["sg_score"] < a["sg_score_ci_high"]
    row = next(r for r in json.loads(board.render("json"))["rows"] if r["row"] == "a")
    assert row["sg_score"]["ci"] == pytest.approx([by_hand.low, by_hand.high], abs=1e-4)
    assert "sg_score_ci_low" in board.render("csv").splitlines()[0]
    assert list(board.frame["label"]) == ["a", "fbank"]  # no SUPERB score anywhere: ordered by the SG score


def folds_of(records: list[ResultRecord], upstream: str, task: str, metric: str) -> list[UnitScores]:
    """One seed's per-fold unit scores of a metric (one fold here)."""
    r = next(r for r in records if r.upstream == upstream and r.task == task)
    return r.unit_scores(metric)


def test_import_published_superb_sg_paper(tmp_path, capsys):
    rows = read_published_csv(shipped_files()["superb-sg-paper"])
    # 18 leaderboard rows x (PESQ, STOI, SI-SDRi, BLEU), and the one OOD-ASR aggregate SUPERB-SG quotes
    assert len(rows) == 18 * 4 + 1
    assert all("public.json (commit 2935745)" in r.source for r in rows if r.task != "ood_asr")
    assert {(r.task, r.metric) for r in rows} == {("se", "pesq"), ("se", "stoi"), ("ss", "sisdri"), ("st", "bleu"),
                                                  ("ood_asr", "mean")}
    by = {(r.upstream, r.task, r.metric): r.value for r in rows}
    assert (by[("FBANK", "st", "bleu")], by[("wav2vec 2.0 Base", "st", "bleu")], by[("HuBERT Base", "st", "bleu")]) \
        == (2.32, 14.81, 15.53)
    (ood,) = [r for r in rows if r.task == "ood_asr"]
    assert (ood.upstream, ood.value, ood.higher_is_better) == ("FBANK", 63.58, False)
    assert "Tsai et al." in ood.source and "arXiv:2203.06849, Table 2" in ood.source
    assert by[("FBANK", "se", "pesq")] == 2.55 and by[("HuBERT Base", "se", "stoi")] == 93.9
    assert by[("WavLM Large", "ss", "sisdri")] == 11.1938 and by[("wav2vec 2.0 Base", "ss", "sisdri")] == 9.77
    assert all("arXiv:2203.06849" in r.source for r in rows if r.upstream == "HuBERT Large")

    db = tmp_path / "lb.db"
    assert main(["leaderboard", "import-published", "superb-sg-paper", "--db", str(db)]) == 0
    assert "73 inserted, 0 replaced, 0 skipped" in capsys.readouterr().out
    assert len(ResultStore(db).published()) == 73
    assert main(["leaderboard", "--db", str(db), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["reference"] == "paper"
    table = {r["row"]: r for r in shown["rows"]}
    assert table["WavLM Large (published)"]["sg_score"]["value"] == pytest.approx(1000.0)
    assert table["FBANK (published)"]["sg_score"]["value"] == pytest.approx(0.0)
    fbank = table["FBANK (published)"]
    assert fbank["ood_asr"]["value"] == 63.58 and "Tsai et al." in fbank["source"]
    assert table["HuBERT Base (published)"]["ood_asr"]["value"] is None
    assert table["WavLM Large (published)"]["superb_score"]["value"] is None  # SG tasks only: no SUPERB score
    hubert = table["HuBERT Base (published)"]
    assert hubert["tasks"]["se"]["mean"] == 2.58 and hubert["tasks"]["se"]["secondary"]["stoi"]["mean"] == 93.9
    assert hubert["tasks"]["ss"]["mean"] == 9.36
    assert hubert["tasks"]["st"]["mean"] == 15.53
    assert hubert["sg_score"]["value"] == pytest.approx(
        ((points(2.58, PESQ) + points(93.9, STOI)) / 2 + points(9.36, SISDRI) + points(15.53, (2.32, 26.5748))) / 3,
        abs=1e-5)
    assert hubert["sg_score"]["scope"] == f"{SG_SCOPE}; paper reference points"
    assert [r["row"] for r in shown["rows"]][:2] == ["WavLM Large (published)", "WavLM Base+ (published)"]
    assert main(["leaderboard", "--db", str(db)]) == 0
    md = capsys.readouterr().out
    assert "| WavLM Large (published) | – | published | 2.70 | 94.49 | – | 11.19 |" in md
    assert "| 1000.0 | 3: se,ss,st |" in md and "| 0.0 | 3: se,ss,st |" in md
    assert "| FBANK (published) | – | published | 2.55 | 93.60 | – | 9.23 | – | – | 2.32 | 63.58 |" in md


def test_published_pesq_is_checked_on_its_own_scale(tmp_path):
    path = tmp_path / "pub.csv"
    path.write_text("upstream,task,value,source,metric\nA,se,4.2,x,pesq\nB,se,42,x,pesq\nC,ss,12.5,x,sisdri\n")
    with pytest.raises(PublishedError, match=r"line 3, field 'value': 42 is not a pesq value \(PESQ\) between 1 "
                                             r"and 4.65"):
        read_published_csv(path)


def test_the_report_shows_the_sg_score():
    html = build_report(sg_records())
    assert "SG score (local ref)" in html and "SG tasks" in html
    assert "SG score: superbench&#x27;s own SUPERB-SG aggregate (SUPERB-SG defines no overall score)" in html


def test_compare_keeps_the_sg_score_apart():
    rng = np.random.default_rng(1)
    ks_a, ks_b = (rng.random(40) < 0.8).astype(int).tolist(), (rng.random(40) < 0.6).astype(int).tolist()
    pesq_a, pesq_b = list(2.6 + 0.1 * rng.random(40)), list(2.5 + 0.1 * rng.random(40))
    stoi_a, stoi_b = list(94.0 + rng.random(40)), list(93.5 + rng.random(40))
    records = []
    for up, ks, pesq, stoi in (("mine", ks_a, pesq_a, stoi_a), ("fbank", ks_b, pesq_b, stoi_b)):
        ids = [f"u{i:03d}" for i in range(40)]
        records.append(ResultRecord(
            up, f"fp-{up}", "ks", "acc", True, 100 * float(np.mean(ks)), 100 * float(np.mean(ks)), 0, "1",
            profile="ci", corpus="superbench-demo", manifest_fingerprint="d-ks",
            units={"acc": [UnitScores.build("proportion", "utterance", ids, {"correct": ks}).to_dict()]}))
        records.append(rec(up, "se", 0.0, per_unit={"pesq": pesq, "stoi": stoi}))
    result = compare_models(records, "mine", "fbank", reference="paper")
    data = json.loads(result.to_json())
    (superb,) = data["superb_score"]
    (sg,) = data["sg_score"]
    assert superb["tasks"] == ["ks"] and superb["suite"] == "superb"
    assert sg["tasks"] == ["se"] and sg["columns"] == ["se", "se/stoi"] and sg["suite"] == "sg"
    assert sg["scope"] == f"{SG_SCOPE}; paper reference points"
    by_hand = [(points(float(np.mean(p)), PESQ) + points(float(np.mean(s)), STOI)) / 2
               for p, s in ((pesq_a, stoi_a), (pesq_b, stoi_b))]
    assert (sg["a"], sg["b"]) == pytest.approx(tuple(by_hand), abs=1e-3)
    assert sg["ci"][0] <= sg["delta"] <= sg["ci"][1]
    text = result.format()
    assert f"SG score ({SG_SCOPE}) over se (paper ref)" in text and "SUPERB score over ks (paper ref)" in text


# ---------------------------------------------------------------------- SUPERB-SG's OOD-ASR aggregate

OOD = {"ood_es": 40.0, "ood_zh": 30.0, "ood_ar": 50.0, "ood_sbcsae": 70.0}


def test_ood_asr_aggregate_is_the_plain_mean_of_all_four_and_nothing_less():
    assert ood_asr_mean(OOD) == pytest.approx((40 + 30 + 50 + 70) / 4)
    assert math.isnan(ood_asr_mean({t: v for t, v in OOD.items() if t != "ood_sbcsae"}))
    assert math.isnan(ood_asr_mean({**OOD, "ood_ar": math.nan}))


def test_ood_asr_interval_resamples_each_task_and_averages_per_draw():
    rng = np.random.default_rng(3)
    values = {t: list(rng.uniform(0, 2 * v, 20)) for t, v in OOD.items()}
    seeds = {t: [[UnitScores.from_dict(units(v))]] for t, v in values.items()}  # one seed, one fold
    low, high = ood_asr_interval(seeds)
    point = np.mean([np.mean(v) for v in values.values()])
    assert low < point < high
    # the mean of the four tasks' own bootstrap draws, each task on its own stream
    draws = np.mean([bootstrap(seeds[t], RESAMPLES, task_stream(t)) for t in OOD], axis=0)
    assert (low, high) == pytest.approx(tuple(np.percentile(draws, [2.5, 97.5])))
    # a task with no spread adds none: the interval narrows
    flat = {**seeds, "ood_sbcsae": [[UnitScores.from_dict(units([70.0] * 20))]]}
    low3, high3 = ood_asr_interval(flat)
    assert high3 - low3 < high - low
    assert all(math.isnan(x) for x in ood_asr_interval({t: s for t, s in seeds.items() if t != "ood_zh"}))


def test_leaderboard_shows_the_ood_asr_aggregate_only_for_rows_with_all_four(capsys):
    records = [rec(up, t, v + shift) for up, shift in (("fbank", 0.0), ("a", -10.0)) for t, v in OOD.items()]
    records += [rec("b", t, v) for t, v in OOD.items() if t != "ood_sbcsae"]
    board = build_leaderboard(records, ci=False)
    by = {r["label"]: r for _, r in board.frame.iterrows()}
    assert by["fbank"]["ood_asr"] == pytest.approx(47.5) and by["a"]["ood_asr"] == pytest.approx(37.5)
    assert math.isnan(by["b"]["ood_asr"])
    shown = board.display_frame()
    assert dict(zip(board.frame["label"], shown[OOD_ASR_HEADER])) == {"a": "37.50", "fbank": "47.50", "b": "–"}
    assert f"{OOD_ASR_HEADER}: {OOD_ASR_SCOPE}" in board.notes
    assert "no OOD-ASR aggregate for rows with only some of its four tasks: b (no ood_sbcsae)" in board.notes
    rows = {r["row"]: r for r in json.loads(board.to_json())["rows"]}
    assert rows["a"]["ood_asr"]["value"] == pytest.approx(37.5) and rows["b"]["ood_asr"]["value"] is None
    assert rows["a"]["ood_asr"]["tasks"] == list(OOD_ASR_TASKS)
    assert "ood_asr" in board.to_csv().splitlines()[0].split(",")
    # it is no score: the SUPERB score counts none of the four, and sorting by it puts the lowest first
    assert all(not set(s.tasks) & set(OOD_ASR_TASKS) for s in board.scores)
    from leaderboard.table import sort_leaderboard
    assert list(sort_leaderboard(board, "ood_asr").frame["label"]) == ["a", "fbank", "b"]
    # a model with no OOD-ASR task shows no such column at all
    assert OOD_ASR_HEADER not in build_leaderboard([rec("fbank", "ks", 50.0)], ci=False).display_frame()


def test_published_ood_asr_aggregate_rejects_another_metric_or_a_non_rate(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("upstream,task,value,source,metric\nX,ood_asr,63.58,a paper,wer\nY,ood_asr,-3,a paper,\n")
    with pytest.raises(PublishedError) as err:
        read_published_csv(bad)
    text = str(err.value)
    assert "line 2, field 'metric': 'wer': ood_asr is an aggregate, its metric is empty or 'mean'" in text
    assert "line 3, field 'value': -3 is not an error rate (percent) between 0 and 1000" in text


def test_compare_and_report_give_the_ood_asr_aggregate_only_with_all_four_tasks():
    rng = np.random.default_rng(5)
    values = {up: {t: list(v + shift + 10 * rng.random(30)) for t, v in OOD.items()}
              for up, shift in (("mine", -8.0), ("fbank", 0.0))}
    records = [rec(up, t, 0.0, per_unit={TASKS.get(t).metric: vals}) for up, per in values.items()
               for t, vals in per.items()]
    result = compare_models(records, "mine", "fbank", reference="local")
    (ood,) = json.loads(result.to_json())["ood_asr"]
    mean = {up: float(np.mean([np.mean(v) for v in per.values()])) for up, per in values.items()}
    assert (ood["a"], ood["b"]) == pytest.approx((mean["mine"], mean["fbank"]), abs=1e-3)
    assert ood["suite"] == "ood_asr" and ood["scope"] == OOD_ASR_SCOPE and ood["tasks"] == list(OOD_ASR_TASKS)
    assert ood["ci"][0] <= ood["delta"] <= ood["ci"][1] < 0  # mine is lower (better) by about 8 points
    assert "OOD-ASR mean WER/CER (SUPERB-SG's aggregate, lower is better) over ood_es,ood_zh,ood_ar,ood_sbcsae " \
           "(no reference points): A " in result.format()
    html = build_report(records)
    assert OOD_ASR_HEADER in html and f"{mean['mine']:.2f} (CI ±" in html
    # three of the four: no aggregate anywhere
    three = [r for r in records if r.task != "ood_ar"]
    assert json.loads(compare_models(three, "mine", "fbank", reference="local").to_json())["ood_asr"] == []
    assert OOD_ASR_HEADER not in build_report(three).split("<ul class='notes'>")[0]
