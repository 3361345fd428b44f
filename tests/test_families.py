"""The family table as a library (`upstreams.pretrain.families`): checked before any work, and its
leaderboard and report written from the store without going through the command line."""

from __future__ import annotations

import pytest

from leaderboard.store import ResultStore, StoreWriter
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import ToneUpstream, make_class_corpus, scratch_run_options
from upstreams.pretrain import family_names
from upstreams.pretrain.families import (
    DEFAULT_TASKS,
    FamilyComparison,
    scoring_corpus,
    write_board_and_report,
)


def test_a_comparison_defaults_to_every_family_and_refuses_bad_values_when_built(tmp_path):
    c = FamilyComparison(out=tmp_path / "fam")
    assert c.families == tuple(family_names()) and c.tasks == DEFAULT_TASKS == ("pr", "ks", "sid", "er", "asr")
    assert (c.db, c.results) == (tmp_path / "fam" / "leaderboard.db", tmp_path / "fam" / "results")
    with pytest.raises(ValueError, match=r"--families: unknown wav2vec3 \(families: apc,"):
        FamilyComparison(out=tmp_path / "x", families=("apc", "wav2vec3"))
    with pytest.raises(ValueError, match="--seeds and --confirm-seeds must be at least 1"):
        FamilyComparison(out=tmp_path / "x", seeds=0)
    assert not (tmp_path / "fam").exists() and not (tmp_path / "x").exists()


def test_the_table_scores_on_the_demo_it_trained_on_or_the_default_demo():
    assert [scoring_corpus(d) for d in ("demo", "demo:tiny", "/data/wavs")] == ["demo", "demo:tiny", "demo"]


def test_board_and_report_are_written_from_the_store(tmp_path):
    make_class_corpus(tmp_path / "data", task="ks")
    db, out = tmp_path / "fam" / "leaderboard.db", tmp_path / "fam"
    opts = scratch_run_options(tmp_path, on_record=StoreWriter(db),
                               overrides={"steps": 20, "eval_interval": 10, "lr_grid": [1e-2]})
    (rec,) = run(ToneUpstream(), [get_task("ks")], tmp_path / "data", opts)
    assert [r.test for r in ResultStore(db).records()] == [rec.test]
    write_board_and_report(db, out)
    board = (out / "leaderboard.md").read_text()
    assert "tone" in board and f"{rec.test:.2f}" in board
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and f"superbench report --db {db} -o {out / 'report.html'}" in page


def test_a_store_that_cannot_be_read_leaves_a_warning_not_a_failure(tmp_path, caplog):
    write_board_and_report(tmp_path / "missing.db", tmp_path)
    assert "could not write" in caplog.text and not (tmp_path / "leaderboard.md").exists()
