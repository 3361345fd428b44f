import base64
import re
import shutil
import subprocess

import numpy as np
import pytest

from leaderboard.report import build_report, normalise_weights
from leaderboard.store import ResultStore
from superbench.cli import main
from superbench.records import ResultRecord
from superbench.tasks import TASKS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_records():
    out = []
    for up, base, layers in (("fbank", 40.0, 1), ("hubert-tiny", 70.0, 4)):
        for task in ("ks", "asr"):
            spec = TASKS.get(task)
            for seed in (0, 1):
                value = base + seed if spec.higher_is_better else 100 - base - seed
                w = np.arange(1, layers + 1, dtype=float)
                out.append(ResultRecord(up, f"fp-{up}", task, spec.metric, spec.higher_is_better, value, value,
                                        seed, "1.0", profile="fast", layer_weights=list(w / w.sum())))
    return out


def test_report_separates_corpora():
    from dataclasses import replace

    recs = make_records()
    recs += [replace(r, manifest_fingerprint="5e6f7a8b0000", test=r.test - 10) for r in recs
             if r.upstream == "hubert-tiny"]
    html = build_report(recs, reference="local")
    assert "hubert-tiny [data 5e6f7a8b]" in html and "hubert-tiny [data unknown]" in html
    assert len(embedded_pngs(html)) == 2


def embedded_pngs(html):
    return [base64.b64decode(m) for m in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)]


def test_normalise_weights():
    assert normalise_weights([1, 1, 2]) == pytest.approx([0.25, 0.25, 0.5])
    logits = [0.0, np.log(3.0), -1e9]  # raw logits are softmaxed
    assert normalise_weights(logits) == pytest.approx([0.25, 0.75, 0.0])
    assert normalise_weights([]).size == 0


def test_report_is_self_contained_with_table_and_images():
    html = build_report(make_records(), reference="local")
    assert html.startswith("<!DOCTYPE html>")
    assert "<table" in html and "hubert-tiny" in html and "KS ACC% ↑" in html and "ASR WER% ↓" in html
    assert "SUPERB (local ref)" in html and "1000.0" in html
    pngs = embedded_pngs(html)
    assert len(pngs) == 2 and all(p.startswith(PNG_MAGIC) for p in pngs)  # bar chart + layer weights
    assert not re.search(r"(src|href)=['\"]https?://", html)  # nothing fetched from the network


def test_report_without_layer_weights_says_so():
    recs = [r for r in make_records() if r.upstream == "fbank"]  # a single layer: nothing to weigh
    html = build_report(recs)
    assert len(embedded_pngs(html)) == 1 and "No layer weights recorded" in html


def test_cli_report(tmp_path):
    db = tmp_path / "lb.db"
    ResultStore(db).add_many(make_records())
    out = tmp_path / "r.html"
    assert main(["report", "--db", str(db), "-o", str(out)]) == 0
    assert len(embedded_pngs(out.read_text())) == 2


CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                None)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary to render the report")
def test_report_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(build_report(make_records()), encoding="utf-8")
    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
           page.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.read_bytes().startswith(PNG_MAGIC)
    import matplotlib.image

    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (1600, 1200)
    # a rendered page is not blank: plenty of non-white pixels (table text, bars, heatmap)
    non_white = (img[..., :3] < 0.9).any(axis=-1).mean()
    assert non_white > 0.02
