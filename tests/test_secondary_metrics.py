"""A task with a secondary metric (SF-like: slot-type F1 main, slot-value CER secondary) through the
leaderboard: aggregate, tables, SUPERB score, the CI check and published numbers.

A test-only task `slotx` is registered for each test (undone afterwards), so nothing here depends on the
built-in SF module. Its paper points are SF's: F1 FBANK 69.64 / SOTA 89.81, CER FBANK 52.94 / SOTA 21.76.
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from downstreams import UtteranceClassification
from leaderboard.check import CheckError, compare, load_baseline, make_baseline, write_baseline
from leaderboard.published import PublishedError, read_published_csv
from leaderboard.report import build_report, task_bar_figure
from leaderboard.score import local_references, paper_references, superb_score
from leaderboard.store import STORE_SCHEMA_VERSION, ResultStore
from leaderboard.table import build_leaderboard
from superbench.cli import main
from superbench.records import ResultRecord
from superbench.summary import aggregate, metric_column, split_metric_column
from superbench.task_info import ERROR_RATE, PERCENT
from superbench.tasks import TASKS, PaperReference, SecondaryMetric, Task

BASELINE_CI = Path(__file__).resolve().parent.parent / "leaderboard" / "baseline-ci.json"

# Hand-computed scores with SF's paper points (HuBERT Base: F1 88.53, CER 25.20):
F1_SCORE = 1000 * (88.53 - 69.64) / (89.81 - 69.64)  # = 1000 * 18.89 / 20.17 = 936.539...
CER_SCORE = 1000 * (25.20 - 52.94) / (21.76 - 52.94)  # = 1000 * (-27.74) / (-31.18) = 889.673...
TASK_SCORE = (F1_SCORE + CER_SCORE) / 2  # = 913.106...


@pytest.fixture(autouse=True)
def slotx():
    task = Task(name="slotx", description="SF-like test task", metric="f1", higher_is_better=True,
                target="slots", kind=UtteranceClassification(), recipe=Path("unused.yaml"), order=8,
                paper_reference=PaperReference(69.64, 89.81, "test: SF paper points"),
                secondary_metrics=(SecondaryMetric("cer", False, PaperReference(52.94, 21.76, "test: SF CER"),
                                                   range=ERROR_RATE),), metric_range=PERCENT)
    with TASKS.scoped():
        TASKS.register("slotx", task, source="tests/test_secondary_metrics.py")
        yield task
    assert "slotx" not in TASKS


def rec(upstream, f1, cer=None, seed=0, task="slotx", data="d-slot", profile="superb", recipe="1", fp=None,
        created_at="", corpus=""):
    spec = TASKS.get(task)
    secondary = {} if cer is None else {"cer": {"dev": cer + 1.0, "test": cer}}
    return ResultRecord(upstream, fp or f"fp-{upstream}", task, spec.metric, spec.higher_is_better, f1, f1 - 1.0,
                        seed, recipe, profile=profile, manifest_fingerprint=data, secondary=secondary,
                        created_at=created_at, corpus=corpus, lr=1e-3)


def ks(upstream, value, seed=0, **kw):
    return ResultRecord(upstream, f"fp-{upstream}", "ks", "acc", True, value, value, seed, "1", profile="superb",
                        manifest_fingerprint="d-ks", lr=1e-3, **kw)


# -- aggregate ----------------------------------------------------------------------------------------------
def test_column_keys():
    assert metric_column("slotx", "f1") == metric_column("slotx") == "slotx"
    assert metric_column("slotx", "cer") == "slotx/cer"
    assert split_metric_column("slotx/cer") == ("slotx", "cer") and split_metric_column("ks") == ("ks", None)


def test_aggregate_has_a_row_per_task_metric_right_after_its_task():
    records = [rec("a", 88.0, 25.0, seed=0), ks("a", 90.0), rec("a", 90.0, 27.0, seed=1), rec("a", 89.0, seed=2)]
    long = aggregate(records)
    assert list(zip(long["task"], long["metric"], long["role"], long["column"])) == [
        ("slotx", "f1", "main", "slotx"), ("slotx", "cer", "secondary", "slotx/cer"), ("ks", "acc", "main", "ks")]
    f1, cer = long.iloc[0], long.iloc[1]
    assert (f1["mean"], f1["n"], f1["seeds"]) == (89.0, 3, [0, 1, 2])
    # the old record (seed 2) has no CER: it counts in F1 only
    assert (cer["mean"], cer["n"], cer["seeds"], cer["dev_mean"]) == (26.0, 2, [0, 1], 27.0)
    assert cer["std"] == pytest.approx(math.sqrt(2.0))  # sample std of 25, 27
    assert bool(cer["higher_is_better"]) is False and bool(f1["higher_is_better"]) is True
    assert cer["lr"] == 1e-3
    main_only = aggregate(records, secondary=False)
    assert list(main_only["column"]) == ["slotx", "ks"]
    # what `superbench run` prints from (by upstream/profile/layer): every attribute it reads is there
    for r in aggregate(records, by=("upstream", "profile", "layer")).itertuples():
        assert (r.upstream, r.layer, r.profile) == ("a", "", "superb")
        assert {r.metric, r.task} and r.dev_mean > 0 and r.extraction_s == 0.0 and r.training_s == 0.0


# -- SUPERB score ------------------------------------------------------------------------------------------
def test_paper_references_include_the_secondary_metric():
    refs = paper_references()
    assert (refs["slotx"].fbank, refs["slotx"].sota, refs["slotx"].metric) == (69.64, 89.81, "f1")
    assert (refs["slotx/cer"].fbank, refs["slotx/cer"].sota, refs["slotx/cer"].metric) == (52.94, 21.76, "cer")


def test_task_score_is_the_mean_of_its_metric_scores_hand_computed():
    s = superb_score({"slotx": 88.53, "slotx/cer": 25.20}, paper_references(), "paper")
    assert s.per_metric == {"slotx": pytest.approx(936.5394, abs=1e-3), "slotx/cer": pytest.approx(889.6729, abs=1e-3)}
    assert s.per_task == {"slotx": pytest.approx(TASK_SCORE)} and s.score == pytest.approx(913.1061, abs=1e-3)
    assert s.tasks == ("slotx",) and s.n_tasks == 1 and not s.partial
    # with KS (96.30: 1000 * (96.30 - 41.3826674) / (96.66 - 41.3826674) = 993.487): slotx counts ONCE
    both = superb_score({"ks": 96.30, "slotx": 88.53, "slotx/cer": 25.20}, paper_references(), "paper")
    ks_score = 1000 * (96.30 - 41.3826674) / (96.66 - 41.3826674)
    assert both.score == pytest.approx((ks_score + TASK_SCORE) / 2) == pytest.approx(953.2968, abs=1e-3)
    assert both.tasks == ("ks", "slotx") and both.metrics == ("ks", "slotx", "slotx/cer")


def test_old_record_without_the_secondary_is_scored_on_what_it_has_and_says_so():
    s = superb_score({"slotx": 88.53}, paper_references(), "paper")
    assert s.per_task == {"slotx": pytest.approx(F1_SCORE)} and s.partial == {"slotx": ("cer",)}
    assert s.partial_text() == "slotx: f1 only, no cer"
    assert "slotx: f1 only, no cer" in s.label()


def test_local_references_are_per_metric_and_direction_aware():
    means = {"fbank": {"slotx": 60.0, "slotx/cer": 50.0}, "a": {"slotx": 80.0, "slotx/cer": 30.0},
             "b": {"slotx": 70.0, "slotx/cer": 40.0}}
    refs = local_references(means)
    assert (refs["slotx"].fbank, refs["slotx"].sota) == (60.0, 80.0)
    assert (refs["slotx/cer"].fbank, refs["slotx/cer"].sota) == (50.0, 30.0)  # lower CER is best
    b = superb_score(means["b"], refs, "local")
    # F1: 1000 * (70 - 60) / (80 - 60) = 500; CER: 1000 * (40 - 50) / (30 - 50) = 500; task 500
    assert b.per_metric == {"slotx": pytest.approx(500.0), "slotx/cer": pytest.approx(500.0)}
    assert b.score == pytest.approx(500.0)


# -- tables ------------------------------------------------------------------------------------------------
def hubert_two_seeds():
    return [rec("hubert", 88.43, 25.10, seed=0), rec("hubert", 88.63, 25.30, seed=1)]


def test_table_has_a_column_per_secondary_metric_next_to_its_task():
    board = build_leaderboard(hubert_two_seeds() + [ks("hubert", 96.30)], reference="paper")
    assert board.columns == ["ks", "slotx", "slotx/cer"] and board.tasks == ["ks", "slotx"]
    d = board.display_frame()
    cols = list(d.columns)
    assert cols[cols.index("SLOTX F1% ↑") + 1] == "SLOTX CER% ↓"
    row = d.iloc[0]
    assert row["SLOTX F1% ↑"] == "88.53 ± 0.14" and row["SLOTX CER% ↓"] == "25.20 ± 0.14"
    assert row["KS ACC% ↑"] == "96.30" and row["seeds"] == "1/2"
    assert row["SUPERB (paper ref)"] == "953.3" and row["score tasks"] == "2: ks,slotx; not official: 1/10 SUPERB tasks"
    assert board.frame.iloc[0]["score"] == pytest.approx(953.2968, abs=1e-3)
    md = board.to_markdown()
    assert "| SLOTX F1% ↑ | SLOTX CER% ↓ |" in md and "| 88.53 ± 0.14 | 25.20 ± 0.14 |" in md
    assert any("slotx: f1+cer" in n and "mean of its metrics' scores" in n for n in board.notes)
    csv = board.render("csv").splitlines()
    header = csv[0].split(",")
    assert header[header.index("slotx") + 3:header.index("slotx") + 6] == ["slotx/cer", "slotx/cer_std", "slotx/cer_n"]
    assert dict(zip(header, csv[1].split(",")))["slotx/cer"] == "25.2000"
    row_json = json.loads(board.render("json"))["rows"][0]
    cell = row_json["tasks"]["slotx"]
    assert (cell["metric"], cell["mean"], cell["n"]) == ("f1", 88.53, 2)
    assert cell["secondary"]["cer"] == {"higher_is_better": False, "mean": 25.2, "std": pytest.approx(0.141421),
                                        "n": 2}
    assert "secondary" not in row_json["tasks"]["ks"]
    score = row_json["superb_score"]
    assert score["metrics"] == ["ks", "slotx", "slotx/cer"] and score["partial"] == ""
    html = board.render("html")
    assert "<th>SLOTX CER% ↓</th>" in html and "<td>25.20 ± 0.14</td>" in html


def test_row_without_the_secondary_shows_a_dash_and_its_partial_score():
    records = hubert_two_seeds() + [rec("old", 88.53)]  # a record from before secondary metrics
    board = build_leaderboard(records, reference="paper")
    d = board.display_frame().set_index("upstream")
    assert d.loc["old", "SLOTX CER% ↓"] == "–" and d.loc["old", "SLOTX F1% ↑"] == "88.53"
    assert d.loc["old", "score tasks"] == "1: slotx (slotx: f1 only, no cer); not official: 0/10 SUPERB tasks"
    assert d.loc["hubert", "score tasks"] == "1: slotx; not official: 0/10 SUPERB tasks"
    scores = dict(zip(board.frame["label"], board.frame["score"]))
    assert scores == {"hubert": pytest.approx(TASK_SCORE), "old": pytest.approx(F1_SCORE)}
    assert any("old (slotx: f1 only, no cer)" in n for n in board.notes)
    assert any("different task sets" in n for n in board.notes)
    assert "slotx: f1 only, no cer" in board.render("csv")


def test_local_mode_and_sorting_by_the_secondary_metric():
    records = [rec("fbank", 60.0, 50.0), rec("a", 80.0, 40.0), rec("b", 70.0, 30.0)]
    board = build_leaderboard(records, reference="local")
    scores = dict(zip(board.frame["label"], board.frame["score"]))
    # a: F1 1000, CER (40-50)/(30-50) = 500 -> 750; b: F1 500, CER 1000 -> 750; fbank 0
    assert scores == {"a": pytest.approx(750.0), "b": pytest.approx(750.0), "fbank": pytest.approx(0.0)}
    by_cer = build_leaderboard(records, reference="local", sort="slotx/cer")
    assert list(by_cer.frame["label"]) == ["b", "a", "fbank"]  # lower CER first
    by_f1 = build_leaderboard(records, reference="local", sort="slotx")
    assert list(by_f1.frame["label"]) == ["a", "b", "fbank"]
    # FBANK measured without CER (an old fbank record): no local CER reference, and the rows say so
    old_fbank = build_leaderboard([rec("fbank", 60.0), rec("a", 80.0, 40.0)], reference="local")
    assert any("no 'fbank' result for slotx/cer" in n for n in old_fbank.notes)
    a = old_fbank.frame.set_index("label").loc["a"]
    assert a["score"] == pytest.approx(1000.0) and a["partial"] == "slotx: f1 only, no cer"


def test_html_report_shows_the_secondary_column_and_panel():
    records = hubert_two_seeds() + [rec("fbank", 60.0, 50.0)]
    html = build_report(records, reference="local")
    assert "<th>SLOTX CER% ↓</th>" in html and "25.20 ± 0.14" in html
    board = build_leaderboard(records, reference="local")
    fig = task_bar_figure(board, records)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["SLOTX: F1 % (higher is better)", "SLOTX: CER % (lower is better)"]


# -- store -------------------------------------------------------------------------------------------------
def test_store_keeps_the_secondary_values(tmp_path):
    store = ResultStore(tmp_path / "lb.db")
    store.add_many(hubert_two_seeds())
    got = sorted(store.records(), key=lambda r: r.seed)
    assert [r.secondary for r in got] == [{"cer": {"dev": 26.1, "test": 25.1}}, {"cer": {"dev": 26.3, "test": 25.3}}]
    out = tmp_path / "export.json"
    store.export_json(out)
    again = ResultStore(tmp_path / "again.db")
    assert main(["leaderboard", "import", str(out), "--db", str(tmp_path / "again.db")]) == 0
    assert sorted(r.secondary["cer"]["test"] for r in again.records()) == [25.1, 25.3]


def test_schema_3_store_migrates_published_to_a_key_with_the_metric(tmp_path):
    path = tmp_path / "v3.db"
    ResultStore(path).add(rec("a", 80.0, 30.0))
    conn = sqlite3.connect(path)  # rebuild the published table as schema 3 had it, with one row
    conn.execute("DROP TABLE published")
    conn.execute("CREATE TABLE published (upstream TEXT NOT NULL, task TEXT NOT NULL, metric TEXT NOT NULL, "
                 "higher_is_better INTEGER NOT NULL, value REAL NOT NULL, source TEXT NOT NULL, note TEXT NOT NULL, "
                 "stored_at TEXT NOT NULL, PRIMARY KEY (upstream, task))")
    conn.execute("INSERT INTO published VALUES ('Hub', 'slotx', 'f1', 1, 88.53, 'paper', '', 'now')")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    store = ResultStore(path)
    assert [(p.upstream, p.task, p.metric, p.value) for p in store.published()] == [("Hub", "slotx", "f1", 88.53)]
    assert len(store.records()) == 1 and store.records()[0].secondary["cer"]["test"] == 30.0
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == STORE_SCHEMA_VERSION == 4
    pk = [r[1] for r in sorted(conn.execute("PRAGMA table_info(published)").fetchall(), key=lambda r: r[5]) if r[5]]
    assert pk == ["upstream", "task", "metric"]
    assert {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")} == {"results",
                                                                                                 "published"}
    conn.close()


# -- published numbers -------------------------------------------------------------------------------------
def write(tmp_path, text, name="pub.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


PUBLISHED = ("upstream,task,value,source,metric\n"
             "Hub,slotx,88.53,paper T3,f1\n"
             "Hub,slotx,25.20,paper T3,cer\n"
             "Hub,ks,96.30,paper T3,\n")


def test_published_secondary_metric_is_read_stored_shown_and_scored(tmp_path, capsys):
    rows = read_published_csv(write(tmp_path, PUBLISHED))
    assert [(r.task, r.metric, r.higher_is_better, r.value) for r in rows] == [
        ("slotx", "f1", True, 88.53), ("slotx", "cer", False, 25.20), ("ks", "acc", True, 96.30)]
    db = tmp_path / "lb.db"
    assert main(["leaderboard", "import-published", str(write(tmp_path, PUBLISHED)), "--db", str(db)]) == 0
    assert "3 inserted" in capsys.readouterr().out
    store = ResultStore(db)
    assert sorted((p.task, p.metric) for p in store.published()) == [("ks", "acc"), ("slotx", "cer"), ("slotx", "f1")]
    board = build_leaderboard([], reference="paper", published=store.published())
    row = board.display_frame().iloc[0]
    assert row["upstream"] == "Hub (published)" and row["SLOTX CER% ↓"] == "25.20" and row["SLOTX F1% ↑"] == "88.53"
    assert board.frame.iloc[0]["score"] == pytest.approx(953.2968, abs=1e-3)  # (993.487 + 913.106) / 2
    assert main(["leaderboard", "--db", str(db), "--reference", "paper"]) == 0
    out = capsys.readouterr().out
    assert "| Hub (published) |" in out and "| 88.53 | 25.20 |" in out and "953.3" in out
    # importing again skips both of the task's metrics, each named
    assert main(["leaderboard", "import-published", str(write(tmp_path, PUBLISHED)), "--db", str(db)]) == 0
    assert "0 inserted, 0 replaced, 3 skipped" in capsys.readouterr().out


def test_published_metric_and_range_are_validated_per_metric(tmp_path):
    text = ("upstream,task,value,source,metric\n"
            "A,slotx,1,x,wer\n"  # not one of slotx's metrics
            "A,slotx,120,x,cer\n"  # a CER may exceed 100 (insertions): its declared range
            "A,slotx,1200,x,cer\n"  # but not 1000
            "A,slotx,120,x,f1\n"  # an F1 may not
            "A,slotx,20,x,CER\n")  # the metric name is case-insensitive: a duplicate of line 3
    with pytest.raises(PublishedError) as err:
        read_published_csv(write(tmp_path, text))
    msg = str(err.value)
    assert "4 bad row(s)" in msg
    assert "line 2, field 'metric': 'wer' is not one of task slotx's metrics (f1, cer)" in msg
    assert "line 4, field 'value': 1200 is not a cer value (percent) between 0 and 1000" in msg
    assert "line 5, field 'value': 120 is not a percentage between 0 and 100" in msg
    assert "line 6: A / slotx cer already given on line 3" in msg
    assert "line 3" not in msg.replace("on line 3", "")
    asr = read_published_csv(write(tmp_path, "upstream,task,value,source\nA,asr,120,x\n"))
    assert asr[0].value == 120.0  # ASR's WER, too, follows its declared range


# -- check -------------------------------------------------------------------------------------------------
def slot_records(f1s=(88.0, 89.0), cers=(25.0, 26.0), upstream="tiny"):
    return [rec(upstream, f, c, seed=s, profile="fast") for s, (f, c) in enumerate(zip(f1s, cers))]


def test_baseline_has_the_secondary_metrics_and_passes_against_itself(tmp_path, capsys):
    db = tmp_path / "lb.db"
    ResultStore(db).add_many(slot_records() + [ks("tiny", 80.0)])
    path = tmp_path / "base.json"
    assert main(["check", "--write-baseline", str(path), "--upstream", "tiny", "--db", str(db),
                 "--profile", "fast"]) == 0
    entry = json.loads(path.read_text())["tasks"]["slotx"]
    assert (entry["metric"], entry["mean"], entry["n"]) == ("f1", 88.5, 2)
    assert entry["secondary"] == {"cer": {"higher_is_better": False, "mean": 25.5, "std": pytest.approx(2 ** -0.5),
                                          "n": 2}}
    assert load_baseline(path).tasks["slotx"].secondary["cer"].mean == 25.5
    capsys.readouterr()
    assert main(["check", "--baseline", str(path), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "OK: no regression for tiny (1 task(s), 2 metric(s) checked)" in out
    cer_line = next(line for line in out.splitlines() if line.startswith("slotx") and "cer ↓" in line)
    assert "25.50 ± 0.71" in cer_line and cer_line.split()[-1] == "ok"


def test_each_metric_regresses_in_its_own_direction():
    base = make_baseline(slot_records(), "tiny")
    # allowed = max(0.5, 2 * std); CER std 0.707 -> 1.41; F1 std 0.707 -> 1.41
    worse_cer = compare(base, slot_records(cers=(28.0, 29.0)))  # CER +3.0: worse
    cer = next(r for r in worse_cer.rows if r.metric == "cer")
    assert cer.delta == pytest.approx(3.0) and cer.allowed == pytest.approx(2 * 2 ** -0.5)
    assert cer.status == "REGRESSED" and worse_cer.exit_code == 1
    assert [r.status for r in worse_cer.rows] == ["ok", "REGRESSED"]
    text = worse_cer.format()
    assert "FAIL: 1 task(s) regressed for tiny: slotx cer (lower is better: 25.50 -> 28.50)" in text
    better_cer = compare(base, slot_records(cers=(20.0, 21.0)))  # CER -5.0: an improvement, not a regression
    assert [r.status for r in better_cer.rows] == ["ok", "improved"] and better_cer.exit_code == 0
    worse_f1 = compare(base, slot_records(f1s=(84.0, 85.0)))  # F1 -4.0
    assert [r.status for r in worse_f1.rows] == ["REGRESSED", "ok"]
    assert "FAIL: 1 task(s) regressed for tiny: slotx\n" in worse_f1.format()
    better_f1_worse_cer = compare(base, slot_records(f1s=(95.0, 96.0), cers=(30.0, 31.0)))
    assert [r.status for r in better_f1_worse_cer.rows] == ["improved", "REGRESSED"]


def test_cli_exit_code_names_the_regressed_metric(tmp_path, capsys):
    db = tmp_path / "lb.db"
    ResultStore(db).add_many(slot_records())
    path = tmp_path / "base.json"
    assert main(["check", "--write-baseline", str(path), "--upstream", "tiny", "--db", str(db)]) == 0
    worse = tmp_path / "worse.db"
    ResultStore(worse).add_many(slot_records(cers=(30.0, 31.0)))
    capsys.readouterr()
    assert main(["check", "--baseline", str(path), "--db", str(worse)]) == 1
    assert "regressed for tiny: slotx cer (lower is better: 25.50 -> 30.50)" in capsys.readouterr().out


def test_old_baseline_without_secondary_keeps_working_and_says_what_it_does_not_check():
    base = make_baseline(slot_records(), "tiny")
    base.tasks["slotx"].secondary = {}
    assert "secondary" not in base.to_dict()["tasks"]["slotx"]
    rep = compare(base, slot_records(cers=(60.0, 61.0)))  # CER much worse, but the baseline has no CER
    assert rep.exit_code == 0 and [r.metric for r in rep.rows] == ["f1"]
    assert any("secondary metrics without a baseline (not checked" in n and "slotx/cer" in n for n in rep.notes)


def test_current_results_without_the_baselines_secondary_metric():
    base = make_baseline(slot_records(), "tiny")
    old = [rec("tiny", f, seed=s, profile="fast") for s, f in enumerate((88.0, 89.0))]  # no CER
    with pytest.raises(CheckError, match="task slotx: metric cer is in the baseline but the current results have "
                                         "no cer"):
        compare(base, old)
    rep = compare(base, old, allow_missing=True)
    assert [(r.metric, r.status) for r in rep.rows] == [("f1", "ok"), ("cer", "missing")] and rep.exit_code == 0


def test_baseline_secondary_entries_are_validated(tmp_path):
    base = make_baseline(slot_records(), "tiny")
    data = base.to_dict()

    def load(mutate):
        d = json.loads(json.dumps(data))
        mutate(d["tasks"]["slotx"]["secondary"])
        path = tmp_path / "b.json"
        path.write_text(json.dumps(d))
        return load_baseline(path)

    with pytest.raises(CheckError, match=r"tasks.slotx.secondary.wer: not a secondary metric of task slotx \(cer\)"):
        load(lambda s: s.update(wer=s.pop("cer")))
    with pytest.raises(CheckError, match=r"secondary.cer: higher_is_better=True does not match task 'slotx' "
                                         r"\(cer, lower is better\)"):
        load(lambda s: s["cer"].update(higher_is_better=True))
    with pytest.raises(CheckError, match=r"secondary.cer: mean is 2000.0, outside \[0, 1000\]"):
        load(lambda s: s["cer"].update(mean=2000.0))
    with pytest.raises(CheckError, match=r"secondary.cer: std is 80.0, implausible"):
        load(lambda s: s["cer"].update(std=80.0))


def test_committed_ci_baseline_loads_unchanged(tmp_path):
    raw = json.loads(BASELINE_CI.read_text())
    base = load_baseline(BASELINE_CI)
    # SF, SE, SS and VC declare secondary metrics, and the committed baseline checks them
    assert {t: set(tb.secondary) for t, tb in base.tasks.items() if tb.secondary} == {
        "sf": {"cer"}, "se": {"stoi", "sisdri"}, "ss": {"stoi", "pesq"}, "vc": {"wer", "asv", "ddur"}}
    # written back, every entry keeps its shape and values
    again = json.loads(write_baseline(base, tmp_path / "again.json").read_text())["tasks"]
    assert again == raw["tasks"]
