"""The project's own regression gate: score the tiny demo corpus with a tiny upstream
and compare with the baseline committed in leaderboard/ (what a user's CI would do)."""

from dataclasses import replace
from pathlib import Path

import pytest

from recipes.prepare.no_demo_part import NO_DEMO_PART
from superbench.cli import main
from superbench.records import read_record, with_intervals, write_record
from superbench.uncertainty import folds_from_json, value_of

BASELINE = Path(__file__).resolve().parent.parent / "leaderboard" / "baseline-ci.json"
# Same seed and machine give identical scores; the tolerance absorbs float differences between machines.
TOLERANCE = "5"


@pytest.mark.slow
def test_tiny_demo_scores_pass_the_committed_baseline_and_a_worse_score_fails(tmp_path, capsys, builtin_task_names):
    db, results = tmp_path / "ci.db", tmp_path / "results"
    assert main(["run", "--upstream", "hubert-tiny-random", "--task", "all", "--data", "demo:tiny",
                 "--profile", "ci", "--results", str(results), "--db", str(db)]) == 0
    written = {p.name.split("-data")[0]: p for p in results.rglob("*.json")}
    assert set(written) == builtin_task_names - set(NO_DEMO_PART)  # `all` on the demo skips what it has no part for
    # recipe versions as in the baseline: bumped where the superb profile changed (asr twice, pr, ks, sid)
    versions = {"pr": "2", "asr": "3", "ks": "2", "sid": "2", "er": "1", "ic": "1", "sf": "1", "sv": "1", "qbe": "1",
                "sd": "1", "se": "1", "ss": "1", "st": "1", "ood_es": "1", "ood_zh": "1", "ood_ar": "1",
                "vc": "1"}
    assert {task: p.relative_to(results).parts[:3] for task, p in written.items()} == {
        task: ("hubert-tiny-random", read_record(written["ks"]).upstream_fingerprint, f"ci-r{v}")
        for task, v in versions.items()}
    capsys.readouterr()
    assert main(["check", "--baseline", str(BASELINE), "--db", str(db), "--tolerance", TOLERANCE]) == 0
    out = capsys.readouterr().out
    assert "no regression" in out and "size rule only" not in out  # every metric had its paired test
    assert "over the 25 metric(s) tested" in out

    # A real regression, not a faked number: ER (5 folds x 24 utterances) gets 12 utterances wrong that the
    # model got right, so its per-utterance scores, its accuracy (10 points lower) and its interval agree.
    # The paired test against the baseline's units finds the drop significant even after Holm over 25 metrics.
    er = read_record(written["er"])
    out = _check_with(flipped(er, down=12), tmp_path / "real", db, capsys, expect=1)
    er_line = next(line for line in out.splitlines() if line.startswith("er "))
    assert "-10.00" in er_line and er_line.split()[-1] == "REGRESSED"
    assert "FAIL: 1 task(s) regressed for hubert-tiny-random: er (acc -10.00, Holm p" in out

    # Test-set noise: 9 utterances wrong, 2 others right, 5.83 points lower, beyond the tolerance but with 11
    # utterances changing, 9 against 2 (two-sided sign test p = 0.065): it passes, and the report says why.
    out = _check_with(flipped(er, down=9, up=2), tmp_path / "noise", db, capsys, expect=0)
    er_line = next(line for line in out.splitlines() if line.startswith("er "))
    assert "-5.83" in er_line and er_line.split()[-1] == "noise"
    assert "er/acc: worse by 5.83 points, more than the 5.00 allowed, but not significant" in out
    assert "within test-set noise (not significant at alpha 0.05): er/acc" in out
    assert "one-seed baseline" in out and "the smallest drop this test set can tell from noise" in out


def flipped(record, down: int, up: int = 0):
    """`record` with `down` utterances it got right scored wrong and `up` it got wrong scored right (taken in
    turn from each fold, so every fold loses alike), its accuracy and interval recomputed from those units."""
    folds = [dict(f, columns={"correct": list(f["columns"]["correct"])}) for f in record.units[record.metric]]
    spots = [(f, i) for i in range(max(len(x["columns"]["correct"]) for x in folds)) for f in range(len(folds))
             if i < len(folds[f]["columns"]["correct"])]
    right = [(f, i) for f, i in spots if folds[f]["columns"]["correct"][i] == 1][:down]
    wrong = [(f, i) for f, i in spots if folds[f]["columns"]["correct"][i] == 0][:up]
    assert len(right) == down and len(wrong) == up
    for f, i in right + wrong:
        folds[f]["columns"]["correct"][i] = 1 - folds[f]["columns"]["correct"][i]
    test = round(value_of(folds_from_json(folds)), 4)
    return with_intervals(replace(record, test=test, units={record.metric: folds}, test_ci=None, uncertainty={}))


def _check_with(record, where: Path, db: Path, capsys, expect: int) -> str:
    """Store `record` in place of its run and check the store against the committed baseline."""
    write_record(record, where)
    assert main(["leaderboard", "import", str(where), "--db", str(db), "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["check", "--baseline", str(BASELINE), "--db", str(db), "--tolerance", TOLERANCE]) == expect
    return capsys.readouterr().out
