"""The report's figures and provenance: per-row panels, readable bars, chance lines, layer probes, training."""

import base64
import re

import numpy as np
import pytest

from leaderboard.report import (
    build_report,
    complete_layer_probes,
    describe_data_root,
    layer_weight_figure,
    record_labels,
    score_vs_layer_figure,
    task_bar_figure,
)
from leaderboard.store import ResultStore
from leaderboard.table import build_leaderboard
from superbench.cli import main
from superbench.manifest import load_task_manifest
from superbench.records import ResultRecord
from superbench.tasks import TASKS
from superbench.testing import make_class_corpus

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def rec(upstream, task, value, seed=0, fp=None, weights=(), layer=None, trials=(), lr=None, data="d-ks",
        corpus="superbench-demo", profile="ci"):
    spec = TASKS.get(task)
    return ResultRecord(upstream, fp or f"fp-{upstream}", task, spec.metric, spec.higher_is_better, value, value,
                        seed, "1", profile=profile, layer=layer, layer_weights=list(weights), lr=lr,
                        corpus=corpus, manifest_fingerprint=data, trials=list(trials))


def pngs(html):
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def cell_texts(ax):
    return [t.get_text() for t in ax.texts]


def test_layer_weights_get_one_panel_per_fingerprint_with_numbers_in_cells():
    records = [rec("h", "ks", 60.0, fp="aaaaaaaa1111", weights=[0.1, 0.2, 0.7]),
               rec("h", "ks", 62.0, fp="bbbbbbbb2222", weights=[0.6, 0.3, 0.1]),
               rec("fbank", "ks", 40.0, weights=[1.0])]
    board = build_leaderboard(records, reference="local")
    assert sorted(board.frame["label"]) == ["fbank", "h@aaaaaaaa", "h@bbbbbbbb"]  # the table separates them
    fig = layer_weight_figure(records, record_labels(board, records))
    panels = {ax.get_title(): cell_texts(ax) for ax in fig.axes if ax.get_title()}
    assert panels == {"h@aaaaaaaa (ci, r1)": ["0.10", "0.20", "0.70"],
                      "h@bbbbbbbb (ci, r1)": ["0.60", "0.30", "0.10"]}  # never averaged into one panel


def test_bars_have_labels_past_the_error_bar_seed_points_and_chance_only_where_known():
    records = [rec("a", "ks", v, seed=s) for s, v in enumerate((50.0, 60.0, 70.0))]
    records += [rec("fbank", "ks", 30.0), rec("a", "asr", 20.0, data="d-asr"), rec("fbank", "asr", 40.0, data="d-asr")]
    board = build_leaderboard(records, reference="local")
    fig = task_bar_figure(board, records, chance={"ks": 100 / 12})
    axes = {ax.get_title(): ax for ax in fig.axes if ax.get_title()}
    ks, asr = axes["KS: ACC % (higher is better)"], axes["ASR: WER % (lower is better)"]
    label = next(t for t in ks.texts if t.get_text() == "60.0")
    assert label.xy[0] == pytest.approx(60.0 + 10.0)  # mean + std: the number sits right of the error bar
    seeds = np.concatenate([c.get_offsets()[:, 0] for c in ks.collections if len(c.get_offsets()) == 3])
    assert sorted(seeds) == [50.0, 60.0, 70.0]  # every seed drawn as a point
    chance_lines = [ln for ln in ks.lines if ln.get_linestyle() == "--"]
    assert len(chance_lines) == 1 and chance_lines[0].get_xdata()[0] == pytest.approx(100 / 12)
    assert not [ln for ln in asr.lines if ln.get_linestyle() == "--"]  # WER has no chance line
    html = build_report(records, reference="local", chance={"ks": 100 / 12})
    assert "KS 8.3 %" in html and "no chance line for ASR" in html


def test_score_vs_layer_needs_every_layer_of_one_fingerprint():
    weighted = [rec("h", "ks", 70.0, seed=s, weights=[0.2, 0.3, 0.5]) for s in (0, 1)]
    probes = [rec("h", "ks", v, layer=k) for k, v in enumerate((40.0, 55.0, 65.0))]
    records = weighted + probes + [rec("fbank", "ks", 30.0, weights=[1.0])]
    full = complete_layer_probes(records)
    assert list(full) == [("h", "fp-h", "d-ks", "1", "ci", "ks")]
    assert {k: [r.test for r in v] for k, v in full[("h", "fp-h", "d-ks", "1", "ci", "ks")].items()} == \
        {0: [40.0], 1: [55.0], 2: [65.0]}
    fig = score_vs_layer_figure(records)
    ax = next(ax for ax in fig.axes if ax.get_title())
    line = next(ln for ln in ax.lines if list(ln.get_xdata()) == [0, 1, 2])
    assert list(line.get_ydata()) == [40.0, 55.0, 65.0]
    assert any(ln.get_linestyle() == ":" and ln.get_ydata()[0] == 70.0 for ln in ax.lines)  # weighted sum
    assert complete_layer_probes(weighted + probes[:2]) == {}  # layer 2 missing: no figure
    assert len(pngs(build_report(records, reference="local"))) == 3  # bars, layer weights, score vs layer
    assert "No fingerprint has single-layer probes of every layer" in build_report(weighted + probes[:2])


def trials(best_lr, devs):
    return [{"lr": lr, "fold": "default", "dev": dev, "test": dev, "best_step": 200,
             "history": [[100, dev - 5], [200, dev]]} for lr, dev in zip((1e-3, 1e-2), devs)]


def test_training_figures_and_provenance():
    records = [rec("h", "ks", 70.0 + s, seed=s, weights=[0.5, 0.5], lr=1e-2, trials=trials(1e-2, (60.0, 65.0)))
               for s in (0, 1)]
    records.append(rec("fbank", "ks", 40.0, weights=[1.0], lr=1e-3, trials=trials(1e-3, (45.0, 41.0))))
    html = build_report(records, command="superbench report --db lb.db -o r.html")
    pictures = pngs(html)
    assert len(pictures) == 4 and all(p.startswith(PNG_MAGIC) for p in pictures)  # bars, weights, curves, sweep
    assert "reference = local by default" in html and "superbench-demo" in html
    assert "<td>0.01, 0.01</td>" in html  # chosen lr per seed
    assert "<td>0.001, 0.01</td>" in html  # the lr grid swept
    assert "superbench report --db lb.db -o r.html" in html
    assert "superbench run --upstream h --task ks --data &lt;superbench-demo data d-ks&gt; --profile ci --seeds 2" \
        in html
    assert "Hours and utterances per split are not stored in result records" in html


def test_corpus_sizes_and_chance_come_from_matching_manifests(tmp_path):
    task_dir = make_class_corpus(tmp_path / "data", "ks", n_classes=4, per_class=(6, 2, 2))
    fp = load_task_manifest(task_dir, check_files=False).fingerprint
    corpora, chance = describe_data_root(tmp_path / "data", fingerprints={fp})
    assert chance == {"ks": 25.0}
    assert corpora[fp]["corpus"] == "tones" and corpora[fp]["classes"] == 4
    assert {s: v["utterances"] for s, v in corpora[fp]["splits"].items()} == {"train": 24, "dev": 8, "test": 8}
    assert describe_data_root(tmp_path / "data", fingerprints={"other"}) == ({}, {})  # another corpus says nothing

    db = tmp_path / "lb.db"
    ResultStore(db).add_many([rec("a", "ks", 60.0, data=fp, corpus="tones", weights=[0.5, 0.5]),
                              rec("fbank", "ks", 30.0, data=fp, corpus="tones")])
    out = tmp_path / "r.html"
    assert main(["report", "--db", str(db), "-o", str(out), "--data", str(tmp_path / "data")]) == 0
    html = out.read_text()
    assert "KS 25.0 %" in html and "<td>train</td>" in html and "<td>24</td>" in html
    assert f"--data {tmp_path / 'data'}" in html  # the report's own command
