"""`superbench pretrain` from the command line, `pretrained:DIR` naming, and the family table's verdicts."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from superbench.cli import main
from superbench.exit_codes import ExitCode
from superbench.upstream import load_upstream
from upstreams.pretrain.families import compare_scores, families_markdown


def test_pretrain_cli_writes_a_folder_that_loads_as_trained_or_random_init(tmp_path, capsys):
    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(16000) / 16000
    for i in range(3):
        sf.write(audio / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (150 + 60 * i) * t)).astype(np.float32), 16000)
    for steps, folder in ((2, "trained"), (0, "init")):
        assert main(["pretrain", "apc", "--data", str(audio), "--steps", str(steps), "--batch-size", "2",
                     "--crop-seconds", "0.5", "--out", str(tmp_path / folder), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert f"load it with --upstream pretrained:{tmp_path / 'trained'} (or apc={tmp_path / 'trained'})" in out
    info = json.loads((tmp_path / "trained" / "pretrain.json").read_text())
    assert info["steps"] == 2 and info["data"]["utterances"] == 3 and info["loader"] == "apc"
    trained = load_upstream(f"pretrained:{tmp_path / 'trained'}")
    init = load_upstream(f"pretrained:{tmp_path / 'init'}")
    assert (trained.name, init.name) == ("apc-trained", "apc-random-init")
    assert trained.fingerprint() != init.fingerprint()
    plain = load_upstream(f"apc={tmp_path / 'trained'}").state_dict()  # the loader's own name, the same weights
    assert plain.keys() == trained.state_dict().keys()
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in plain.items())


def test_unknown_family_is_a_usage_error(capsys):
    try:
        main(["pretrain", "wav2vec3", "--out", "x"])
    except SystemExit as exc:
        assert exc.code == 2
    assert "invalid choice: 'wav2vec3'" in capsys.readouterr().err


def test_a_cell_is_clear_only_when_the_means_differ_by_more_than_the_two_stds():
    one = compare_scores([53.1], [60.6], higher_is_better=False)
    assert (one["better"], one["clear"], one["seeds"], one["trained_std"]) == (True, False, 1, 0.0)
    # means 40 and 45, sample stds sqrt(2) and 2 sqrt(2): 5 > 4.24, clear (and worse, accuracy going down)
    ks = compare_scores([39.0, 41.0], [43.0, 47.0], higher_is_better=True)
    assert ks["trained_std"] == pytest.approx(2 ** 0.5) and ks["random_init_std"] == pytest.approx(8 ** 0.5)
    assert (ks["better"], ks["clear"]) == (False, True)
    # means 53 and 56, stds 3 sqrt(2) and sqrt(2): 3 < 5.66, better (PER going down) but within the spread
    pr = compare_scores([50.0, 56.0], [55.0, 57.0], higher_is_better=False)
    assert (pr["better"], pr["clear"], pr["seeds"]) == (True, False, 2)
    # an interrupted confirmation: two seeds of one model, one of the other; no spread is claimed for the one
    half = compare_scores([50.0, 56.0], [60.0], higher_is_better=False)
    assert (half["seeds"], half["clear"], half["trained_std"], half["random_init_std"]) == (1, False, 18 ** 0.5, 0.0)


def test_family_table_marks_wins_in_each_metric_direction_and_says_the_verdicts():
    row = {"family": "apc", "kind": "generative", "parameters": 1000, "steps": 10, "wall_seconds": 12.3,
           "first_loss": 0.8, "final_loss": 0.6, "other_tasks_beaten": [], "beats_random_on_pr": True,
           "tasks": {"pr": compare_scores([53.1], [60.6], False),
                     "ks": compare_scores([39.0, 41.0], [43.0, 47.0], True)}}
    md = families_markdown([row], ["pr", "ks"])
    assert "| apc | generative | 1,000 | 10 | 12 | 0.8 → 0.6 | 53.10 vs 60.60 ✓ | 40.00 ± 1.41 vs 45.00 ± 2.83 |" in md
    assert "- apc: PR better than random init; other tasks better: none" in md

    row["tasks"] = {"pr": compare_scores([50.0, 56.0], [55.0, 57.0], False),
                    "er": compare_scores([50.0, 52.0], [40.0, 41.0], True),
                    "sid": compare_scores([12.0, 14.0], [11.0, 12.0], True)}
    row["other_tasks_beaten"] = ["er", "sid"]
    md = families_markdown([row], ["pr", "er", "sid"])
    assert "| 53.00 ± 4.24 vs 56.00 ± 1.41 ✓ (in spread) | 51.00 ± 1.41 vs 40.50 ± 0.71 ✓ | " \
           "13.00 ± 1.41 vs 11.50 ± 0.71 ✓ (in spread) |" in md
    assert ("- apc: PR better (within the seeds' spread) than random init; other tasks better: er, sid (in spread)"
            in md)
    row["tasks"], row["other_tasks_beaten"] = {"pr": compare_scores([50.0, 56.0], [60.0], False)}, []
    assert "| 53.00 ± 4.24 vs 60.00 ✓ |" in families_markdown([row], ["pr"])


@pytest.mark.slow
def test_families_scores_each_family_and_its_init_and_rescores_small_differences_with_more_seeds(tmp_path):
    from leaderboard.store import ResultStore

    out = tmp_path / "fam"
    argv = ["families", "--out", str(out), "--families", "apc", "--tasks", "ks", "--data", "demo:tiny",
            "--steps", "3", "--batch-size", "2", "--crop-seconds", "0.5", "--no-progress", "--threads", "1"]
    # every difference is below 1000 points: ks is scored again with 2 seeds, for both models
    assert main(argv + ["--confirm-below", "1000"]) == 0
    rows = json.loads((out / "families.json").read_text())
    assert [r["family"] for r in rows] == ["apc"] and rows[0]["steps"] == 3
    cell = rows[0]["tasks"]["ks"]
    seeds = {}
    for r in ResultStore(out / "leaderboard.db").records():
        seeds.setdefault(r.upstream, []).append((r.seed, r.test))
    for name in ("apc-trained", "apc-random-init"):
        assert sorted(s for s, _ in seeds[name]) == [0, 1], name
    trained = [t for _, t in seeds["apc-trained"]]
    assert cell["seeds"] == 2 and cell["trained"] == pytest.approx(sum(trained) / 2)
    assert cell["trained_std"] == pytest.approx(abs(trained[0] - trained[1]) / 2 ** 0.5)
    for name in ("families.md", "leaderboard.md", "report.html", "apc/trained/loss.png"):
        assert (out / name).is_file(), name
    assert "| apc | generative |" in (out / "families.md").read_text()
    page = (out / "families.html").read_text()
    png = base64.b64encode((out / "apc" / "trained" / "loss.png").read_bytes()).decode("ascii")
    assert f"<img alt='apc loss' src='data:image/png;base64,{png}'>" in page
    assert "<td>apc</td>" in page and "apc: PR " in page


def test_families_refuses_unknown_families_and_bad_seeds_before_any_work(tmp_path, caplog):
    assert main(["families", "--out", str(tmp_path / "x"), "--families", "apc,wav2vec3"]) == ExitCode.USAGE
    assert "--families: unknown wav2vec3 (families: apc," in caplog.text
    assert main(["families", "--out", str(tmp_path / "x"), "--confirm-seeds", "0"]) == ExitCode.USAGE
    assert "--seeds and --confirm-seeds must be at least 1" in caplog.text
    assert not (tmp_path / "x").exists()
