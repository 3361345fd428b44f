"""The official SUPERB leaderboard's score, reproduced from its per-task numbers with `leaderboard.score`.

Source of every number here: the leaderboard's own code and data (superbbenchmark.org, built from these repositories):

- `superbbenchmark/superbbenchmark.github.io` @ 293574554feceea02054311f8ee5bf3bb50baa67 (Apr 2022):
  `src/data/public.json` (per-task numbers of each row; the rows named "paper" are SUPERB's Interspeech 2021
  rows), `src/Data.js` (`reference_points`, error rates written as 100 - x) and `src/overall_metrics.js`
  (the "Score" column: per metric 1000 / (SOTA - FBANK + 1e-12) * (m - FBANK), mean per task, mean over tasks,
  shown as `Math.round`).
- `superbbenchmark/website-react` @ cacb90e506388db6421714d184497c11056188ca (Apr 2024): `frontend/src/Data.js`
  (the same `reference_points`, error rates written directly, e.g. "PR_per_public": [82.01, 3.53]) and
  `backend/utils.py` (`get_leaderboard_default`, the same FBANK row). Its commit 025458a (2021-10-14) replaced
  the FBANK row's KS 8.63, IC 9.10, SID 8.5e-4, ER 35.39 by the re-run KS 41.3826674, IC 9.649354219,
  SID 20.058174, ER 48.23672168: IC was re-run with KS/SID/ER.

No page or paper read here prints an aggregate score as a number; the leaderboard computes its "Score" column in
the browser from the data above. So "reproduced" means: the project's `superb_score` gives, row for row, what the
leaderboard's own scoring code (ported below, independently of `leaderboard.score`) gives on the leaderboard's own
data. The integers in `LEADERBOARD_SCORES` are that code's `Math.round` output, pinned so a change shows.
"""

import math

import pytest

from leaderboard.published import read_published_csv, shipped_files
from leaderboard.score import SUPERB_TASKS, Reference, paper_references, superb_score
from superbench.summary import metric_column
from superbench.tasks import TASKS

SOURCE = ("superbbenchmark/website-react@cacb90e frontend/src/Data.js reference_points; "
          "superbbenchmark/superbbenchmark.github.io@2935745 src/Data.js")

#: Leaderboard accessor -> project column key.
COLUMNS = {"PR_per": "pr", "KS_acc": "ks", "IC_acc": "ic", "SID_acc": "sid", "ER_acc": "er", "ASR_wer": "asr",
           "QbE_mtwv": "qbe", "SF_f1": "sf", "SF_cer": metric_column("sf", "cer"), "SV_eer": "sv", "SD_der": "sd"}

#: website-react frontend/src/Data.js `reference_points` (the "*_public" keys): [FBANK, SOTA], metric as reported.
LEADERBOARD_POINTS = {
    "PR_per": (82.01, 3.53), "KS_acc": (41.3826674, 96.66), "IC_acc": (9.649354219, 98.76),
    "SID_acc": (20.058174, 90.3), "ER_acc": (48.23672168, 67.62), "ASR_wer": (23.18, 3.62),
    "QbE_mtwv": (0.58, 7.36), "SF_f1": (69.64, 89.81), "SF_cer": (52.94, 21.76), "SV_eer": (9.56, 5.11),
    "SD_der": (10.05, 5.62)}

#: superbbenchmark.github.io src/Data.js `reference_points`, verbatim: error rates as 100 - x, MTWV as fractions x100.
LEADERBOARD_POINTS_100 = {
    "PR_per": (17.989999999999995, 96.47), "KS_acc": (41.3826674, 96.66), "IC_acc": (9.649354219, 98.76),
    "SID_acc": (20.058174, 9.03e+01), "ER_acc": (48.23672168, 67.62), "ASR_wer": (76.82, 96.38),
    "QbE_mtwv": (100 * 0.0058, 100 * 0.0736), "SF_f1": (69.64, 89.81), "SF_cer": (47.06, 78.24),
    "SV_eer": (90.44, 94.89), "SD_der": (89.95, 94.38)}

_ORDER = ("PR_per", "KS_acc", "IC_acc", "SID_acc", "ER_acc", "ASR_wer", "QbE_mtwv", "SF_f1", "SF_cer", "SV_eer",
          "SD_der")


def _row(*values):
    return dict(zip(_ORDER, values))


#: superbbenchmark.github.io src/data/public.json, "<accessor>_public" values of each row (ERfold*, ASR_LM unused).
LEADERBOARD_ROWS = {
    "FBANK": _row(82.01, 41.3826674, 9.649354219, 20.058174, 48.23672168, 23.18, 0.58, 69.64, 52.94, 9.56, 10.05),
    "wav2vec 2.0 Base": _row(5.74, 96.23, 92.35, 75.18, 63.43, 6.43, 2.33, 88.3, 24.77, 6.02, 6.08),
    "wav2vec 2.0 Large": _row(4.75, 96.66, 95.28, 86.14, 65.64, 3.75, 4.89, 87.11, 27.31, 5.65, 5.62),
    "HuBERT Base": _row(5.41, 96.3, 98.34, 81.42, 64.92, 6.42, 7.359999999999999, 88.53, 25.2, 5.11, 5.88),
    "HuBERT Large": _row(3.53, 95.29, 98.76, 90.33, 67.62, 3.62, 3.53, 89.81, 21.76, 5.98, 5.75),
    "DistilHuBERT": _row(16.27, 95.98, 94.99, 73.54, 63.02, 13.37, 5.11, 82.57, 35.59, 8.55, 6.19),
    "WavLM Base": _row(4.84, 96.79, 98.63, 84.51, 65.94, 6.21, 8.7, 89.38, 22.86, 4.69, 4.55),
    "WavLM Base+": _row(3.92, 97.37, 99, 89.42, 68.65, 5.59, 9.88, 90.58, 21.2, 4.07, 3.5),
    "WavLM Large": _row(3.06, 97.86, 99.31, 95.49, 70.62, 3.44, 8.86, 92.21, 18.36, 3.77, 3.24),
}

#: The leaderboard's "Score" column for these rows: its code's Math.round output on its data (see module docstring).
LEADERBOARD_SCORES = {"FBANK": 0, "wav2vec 2.0 Base": 818, "wav2vec 2.0 Large": 914, "HuBERT Base": 941,
                      "HuBERT Large": 919, "DistilHuBERT": 717, "WavLM Base": 1019, "WavLM Base+": 1106,
                      "WavLM Large": 1145}


def leaderboard_js_score(row):
    """Port of superbbenchmark.github.io src/overall_metrics.js (subset "Paper", metric "interpolation"), with its
    own Data.js reference points: error metrics become 100 - value, each metric is interpolated with the
    leaderboard's `+ 1e-12`, tasks are the accessor prefixes, the score is the mean of the task means."""
    per_metric = {}
    for accessor, value in row.items():
        if any(tag in f"{accessor}_" for tag in ("_eer_", "_per_", "_wer_", "_der_", "_cer_")):
            value = 100 - value
        baseline, topline = LEADERBOARD_POINTS_100[accessor]
        per_metric[accessor] = 1000 / (topline - baseline + 1e-12) * (value - baseline)
    by_task = {}
    for accessor, s in per_metric.items():
        by_task.setdefault(accessor.split("_")[0], []).append(s)
    return sum(sum(v) / len(v) for v in by_task.values()) / len(by_task)


def js_round(x):
    """JavaScript's Math.round (halves go up)."""
    return math.floor(x + 0.5)


def leaderboard_references():
    """The leaderboard's points as `Reference`s keyed by the project's column keys, passed to `superb_score`."""
    refs = {}
    for accessor, (fbank, sota) in LEADERBOARD_POINTS.items():
        column = COLUMNS[accessor]
        task = column.split("/")[0]
        metric = column.split("/")[1] if "/" in column else TASKS.get(task).metric
        refs[column] = Reference(task, metric, fbank, sota, SOURCE)
    return refs


def project_metrics(row):
    return {COLUMNS[accessor]: value for accessor, value in row.items()}


def test_the_two_transcriptions_of_the_leaderboard_points_agree():
    for accessor, (fbank, sota) in LEADERBOARD_POINTS.items():
        fb100, sota100 = LEADERBOARD_POINTS_100[accessor]
        error_rate = accessor.split("_")[1] in ("per", "wer", "cer", "eer", "der")
        as_reported = (100 - fb100, 100 - sota100) if error_rate else (fb100, sota100)
        assert as_reported == pytest.approx((fbank, sota)), accessor


@pytest.mark.parametrize("accessor", _ORDER)
def test_project_paper_constants_are_the_leaderboard_points(accessor):
    ref = paper_references()[COLUMNS[accessor]]
    assert (ref.fbank, ref.sota) == pytest.approx(LEADERBOARD_POINTS[accessor], abs=1e-9)


def test_fbank_scores_zero_on_all_ten_tasks():
    fbank = project_metrics(LEADERBOARD_ROWS["FBANK"])
    s = superb_score(fbank, leaderboard_references())
    assert set(s.tasks) == set(SUPERB_TASKS) and s.official and not s.partial
    assert s.per_metric == pytest.approx({c: 0.0 for c in fbank}, abs=1e-9)
    assert s.score == pytest.approx(0.0, abs=1e-9)
    # With the project's own constants, FBANK at its declared points is 0 everywhere ...
    own = {c: r.fbank for c, r in paper_references().items()}
    mine = superb_score(own, paper_references())
    assert mine.official and mine.score == pytest.approx(0.0, abs=1e-9)
    # ... and so is the leaderboard's FBANK row.
    row = superb_score(fbank, paper_references())
    assert row.per_metric == pytest.approx({c: 0.0 for c in fbank}, abs=1e-9)


@pytest.mark.parametrize("upstream", list(LEADERBOARD_ROWS))
def test_official_leaderboard_score_is_reproduced(upstream):
    row = LEADERBOARD_ROWS[upstream]
    s = superb_score(project_metrics(row), leaderboard_references())
    assert s.official and s.n_tasks == 10 and not s.partial and not s.missing
    expected = leaderboard_js_score(row)
    assert s.score == pytest.approx(expected, abs=1e-6)
    assert js_round(s.score) == js_round(expected) == LEADERBOARD_SCORES[upstream]


def test_reference_rows_hit_1000_where_they_are_the_sota_point():
    refs = leaderboard_references()
    hubert_large = superb_score(project_metrics(LEADERBOARD_ROWS["HuBERT Large"]), refs)
    for task in ("pr", "ic", "er", "asr", "sf"):  # SF: both F1 and CER are HuBERT Large's
        assert hubert_large.per_task[task] == pytest.approx(1000.0, abs=1e-6)
    assert hubert_large.per_metric["sf/cer"] == pytest.approx(1000.0, abs=1e-6)
    hubert_base = superb_score(project_metrics(LEADERBOARD_ROWS["HuBERT Base"]), refs)
    assert hubert_base.per_task["qbe"] == pytest.approx(1000.0, abs=1e-6)
    assert hubert_base.per_task["sv"] == pytest.approx(1000.0, abs=1e-6)
    w2v2_large = superb_score(project_metrics(LEADERBOARD_ROWS["wav2vec 2.0 Large"]), refs)
    assert w2v2_large.per_task["ks"] == pytest.approx(1000.0, abs=1e-6)
    assert w2v2_large.per_task["sd"] == pytest.approx(1000.0, abs=1e-6)
    # SF counts once, as the mean of its two metrics' scores (SUPERB-SG; overall_metrics.js task_aggregate)
    sf = hubert_base.per_metric
    assert hubert_base.per_task["sf"] == pytest.approx((sf["sf"] + sf["sf/cer"]) / 2)
    assert sf["sf"] == pytest.approx(1000 * (88.53 - 69.64) / (89.81 - 69.64))
    assert sf["sf/cer"] == pytest.approx(1000 * (25.20 - 52.94) / (21.76 - 52.94))


def test_shipped_published_rows_are_the_leaderboard_numbers():
    rows = read_published_csv(shipped_files()["superb-paper"])
    shipped = {}
    for r in rows:
        column = r.task if r.metric == TASKS.get(r.task).metric else metric_column(r.task, r.metric)
        shipped.setdefault(r.upstream, {})[column] = r.value
    assert set(shipped) <= set(LEADERBOARD_ROWS)
    for upstream, metrics in shipped.items():
        assert metrics == pytest.approx(project_metrics(LEADERBOARD_ROWS[upstream]), abs=1e-9), upstream
        s = superb_score(metrics, leaderboard_references())
        assert s.official and js_round(s.score) == LEADERBOARD_SCORES[upstream], upstream
