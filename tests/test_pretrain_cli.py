"""`superbench pretrain` from the command line, `pretrained:DIR` naming, and the family table's verdicts."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
import torch

from superbench.cli import main
from superbench.cli.pretrain import families_markdown
from superbench.upstream import load_upstream


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


def test_family_table_marks_wins_in_each_metric_direction_and_says_the_verdicts():
    rows = [{"family": "apc", "kind": "generative", "parameters": 1000, "steps": 10, "wall_seconds": 12.3,
             "first_loss": 0.8, "final_loss": 0.6,
             "tasks": {"pr": {"trained": 53.1, "random_init": 60.6, "trained_std": 0.0, "random_init_std": 0.0,
                              "seeds": 1, "better": True},
                       "ks": {"trained": 40.0, "random_init": 45.0, "trained_std": 1.0, "random_init_std": 2.0,
                              "seeds": 2, "better": False}},
             "beats_random_on_pr": True, "other_tasks_beaten": []}]
    md = families_markdown(rows, ["pr", "ks"])
    assert "| apc | generative | 1,000 | 10 | 12 | 0.8 → 0.6 | 53.10 vs 60.60 ✓ | 40.00 ± 1.00 vs 45.00 ± 2.00 |" in md
    assert "- apc: PR better than random init; other tasks better: none" in md
