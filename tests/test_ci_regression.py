"""The project's own regression gate: score the tiny demo corpus with a tiny upstream
and compare with the baseline committed in leaderboard/ (what a user's CI would do)."""

from dataclasses import replace
from pathlib import Path

import pytest

from superbench.cli import main
from superbench.records import read_record, write_record

BASELINE = Path(__file__).resolve().parent.parent / "leaderboard" / "baseline-ci.json"
# Same seed and machine give identical scores; the tolerance absorbs float differences between machines.
TOLERANCE = "5"


@pytest.mark.slow
def test_tiny_demo_scores_pass_the_committed_baseline_and_a_worse_score_fails(tmp_path, capsys, builtin_task_names):
    db, results = tmp_path / "ci.db", tmp_path / "results"
    assert main(["run", "--upstream", "hubert-tiny-random", "--task", "all", "--data", "demo:tiny",
                 "--profile", "ci", "--results", str(results), "--db", str(db)]) == 0
    written = {p.name.split("-data")[0]: p for p in results.rglob("*.json")}
    assert set(written) == builtin_task_names
    # recipe versions as in the baseline: bumped where the superb profile changed (asr twice, pr, ks, sid)
    versions = {"pr": "2", "asr": "3", "ks": "2", "sid": "2", "er": "1", "ic": "1", "sf": "1", "sv": "1", "qbe": "1",
                "sd": "1"}
    assert {task: p.relative_to(results).parts[:3] for task, p in written.items()} == {
        task: ("hubert-tiny-random", read_record(written["ks"]).upstream_fingerprint, f"ci-r{v}")
        for task, v in versions.items()}
    capsys.readouterr()
    assert main(["check", "--baseline", str(BASELINE), "--db", str(db), "--tolerance", TOLERANCE]) == 0
    assert "no regression" in capsys.readouterr().out

    # One task gets 8 accuracy points worse (more than the tolerance; the tiny model's ks accuracy is
    # about 14.6, and a record below 0 would be refused as invalid): the gate must fail and name it.
    ks = read_record(written["ks"])
    write_record(replace(ks, test=ks.test - 8.0, units={}, test_ci=None, uncertainty={}), tmp_path / "worse")
    assert main(["leaderboard", "import", str(tmp_path / "worse"), "--db", str(db), "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["check", "--baseline", str(BASELINE), "--db", str(db), "--tolerance", TOLERANCE]) == 1
    out = capsys.readouterr().out
    ks_line = next(line for line in out.splitlines() if line.startswith("ks "))
    assert "-8.00" in ks_line and "ok" not in ks_line.split()[-1]
