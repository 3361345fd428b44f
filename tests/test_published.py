"""Published numbers: CSV import with clear errors, their own store table, paper-mode rows, never in `check`."""

import json
import math
import sqlite3

import pytest

from leaderboard.check import CheckError, make_baseline
from leaderboard.published import PublishedError, read_published_csv, resolve_published_path, shipped_files
from leaderboard.store import ResultStore
from leaderboard.table import build_leaderboard
from superbench.cli import main
from superbench.records import ResultRecord
from superbench.tasks import TASKS

HUBERT_BASE = {"pr": 5.41, "ks": 96.30, "sid": 81.42, "er": 64.92, "asr": 6.42}  # SUPERB paper, Table 3


def rec(upstream, task, value, corpus="superbench-demo"):
    spec = TASKS.get(task)
    return ResultRecord(upstream, f"fp-{upstream}", task, spec.metric, spec.higher_is_better, value, value, 0, "1",
                        profile="ci", corpus=corpus, manifest_fingerprint=f"d-{task}")


def test_shipped_table_has_sources_and_the_paper_numbers():
    rows = read_published_csv(shipped_files()["superb-paper"])
    assert len(rows) == 55 and all(r.source for r in rows)  # 5 models x 11 metrics (SF counts F1 and CER)
    hubert = {r.task: r.value for r in rows if r.upstream == "HuBERT Base" and r.task in HUBERT_BASE}
    assert hubert == HUBERT_BASE
    assert all("arXiv:2105.01051" in r.source for r in rows if r.upstream == "HuBERT Base" and r.task in HUBERT_BASE)
    assert resolve_published_path("superb-paper") == shipped_files()["superb-paper"]


def test_published_rows_are_scored_in_paper_mode_only():
    rows = read_published_csv(shipped_files()["superb-paper"])
    board = build_leaderboard([], reference="paper", published=rows)
    f = board.frame.set_index("label")
    # the leaderboard's own overall score for HuBERT Base, 941 (tests/test_official_score.py)
    assert f.loc["HuBERT Base (published)", "score"] == pytest.approx(941.04, abs=0.01)
    assert f.loc["HuBERT Base (published)", "tasks"] == "pr,ks,ic,sid,er,asr,qbe,sf,sv,sd"
    assert bool(f.loc["HuBERT Base (published)", "official"])
    out = json.loads(board.render("json"))
    row = next(r for r in out["rows"] if r["row"] == "HuBERT Base (published)")
    assert row["kind"] == "published" and "Table 3" in row["source"]
    assert "| HuBERT Base (published) | – | published | 5.41 | 96.30 |" in board.to_markdown()
    local = build_leaderboard([rec("fbank", "ks", 40.0), rec("a", "ks", 60.0)], reference="local", published=rows)
    scores = dict(zip(local.frame["label"], local.frame["score"]))
    assert scores["a"] == pytest.approx(1000.0) and math.isnan(scores["HuBERT Base (published)"])
    assert any("not scored with local references" in n for n in local.notes)


def write(tmp_path, text):
    path = tmp_path / "pub.csv"
    path.write_text(text)
    return path


def test_bad_csv_rows_name_line_and_field(tmp_path):
    path = write(tmp_path, "upstream,task,value,source\n"
                           "A,ks,96.3,paper\n"
                           "A,kss,90,paper\n"
                           "B,sid,abc,paper\n"
                           "C,er,64,\n"
                           "D,ks,120,paper\n"  # accuracy; a WER of 120 is possible (insertions)
                           "A,ks,95,paper\n")
    with pytest.raises(PublishedError) as err:
        read_published_csv(path)
    text = str(err.value)
    assert "pub.csv: 5 bad row(s); nothing was imported" in text
    assert "line 3, field 'task': unknown task 'kss'; did you mean 'ss', 'ks'?" in text
    assert "line 4, field 'value': 'abc' is not a number" in text
    assert "line 5, field 'source': empty (every published number needs its source)" in text
    assert "line 6, field 'value': 120 is not a percentage between 0 and 100" in text
    assert "line 7: A / ks already given on line 2" in text
    with pytest.raises(PublishedError, match=r"(?s)line 1: missing column 'source'.*unknown column 'sorce' "
                                             r"\(did you mean 'source'\?\)"):
        read_published_csv(write(tmp_path, "upstream,task,value,sorce\nA,ks,1,x\n"))
    with pytest.raises(PublishedError, match="line 2, field 'metric': 'per' is not task ks's metric"):
        read_published_csv(write(tmp_path, "upstream,task,value,source,metric\nA,ks,1,x,per\n"))


def test_cli_import_published_is_stored_apart_and_never_checked(tmp_path, capsys, caplog):
    db = tmp_path / "lb.db"
    ResultStore(db).add_many([rec("fbank", "ks", 40.0, corpus="speech_commands"),
                              rec("mine", "ks", 90.0, corpus="speech_commands")])
    assert main(["leaderboard", "import-published", "superb-paper", "--db", str(db)]) == 0
    assert "55 inserted, 0 replaced, 0 skipped" in capsys.readouterr().out
    assert main(["leaderboard", "import-published", "superb-paper", "--db", str(db)]) == 0
    assert "0 inserted, 0 replaced, 55 skipped" in capsys.readouterr().out
    store = ResultStore(db)
    assert len(store.published()) == 55 and {r.upstream for r in store.records()} == {"fbank", "mine"}
    # check / baselines read records only: a published name has no results there
    with pytest.raises(CheckError, match="no results for upstream 'HuBERT Base'"):
        make_baseline(store.records(), "HuBERT Base")
    out = tmp_path / "base.json"
    assert main(["check", "--write-baseline", str(out), "--upstream", "mine", "--db", str(db)]) == 0
    assert list(json.loads(out.read_text())["tasks"]) == ["ks"]
    capsys.readouterr()
    assert main(["leaderboard", "--db", str(db), "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["reference"] == "paper"  # speech_commands is SUPERB's corpus
    assert any(r["row"] == "WavLM Base (published)" and r["superb_score"]["value"] for r in shown["rows"])
    assert main(["leaderboard", "--db", str(db), "--format", "json", "--no-published"]) == 0
    assert len(json.loads(capsys.readouterr().out)["rows"]) == 2
    bad = write(tmp_path, "upstream,task,value,source\nA,kss,1,x\n")
    assert main(["leaderboard", "import-published", str(bad), "--db", str(db)]) == 2
    assert "unknown task 'kss'" in caplog.text
    assert main(["report", "--db", str(db), "-o", str(tmp_path / "r.html")]) == 0
    assert "HuBERT Base (published)" in (tmp_path / "r.html").read_text()


def test_schema_2_store_gains_the_published_table(tmp_path):
    path = tmp_path / "v2.db"
    ResultStore(path).add(rec("a", "ks", 50.0))
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE published")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    store = ResultStore(path)
    assert store.published() == [] and len(store.records()) == 1
    store.add_published(read_published_csv(shipped_files()["superb-paper"])[:2])
    assert len(store.published()) == 2
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 4
