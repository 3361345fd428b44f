"""SD (speaker diarization): PIT-BCE, DER against hand-worked cases, RTTM, manifest checks, the LibriMix
preparer, the demo mixer, and a short run through the runner."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from downstreams.diarization import (
    DiarizationHead,
    DiarizationObjective,
    activity_turns,
    corpus_der,
    der_counts,
    format_rttm,
    frame_labels,
    parse_rttm,
    pit_bce,
)
from recipes.prepare import PrepareError
from recipes.prepare.librimix import prepare_librimix
from superbench.manifest import ManifestError, load_task_manifest, write_task_manifest
from superbench.tasks import get_task

SR = 16000


# --------------------------------------------------------------------------- loss

def test_pit_bce_is_the_same_for_either_speaker_order_and_picks_the_matching_one():
    logits = torch.tensor([[[3.0, -3.0], [2.0, -1.0], [-2.0, 2.0], [-1.0, 3.0], [9.0, 9.0]]])  # 5th frame: padding
    straight = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]])
    swapped = straight[:, :, [1, 0]]
    lengths = torch.tensor([4])
    loss, perm = pit_bce(logits, straight, lengths)
    loss_swapped, perm_swapped = pit_bce(logits, swapped, lengths)
    # by hand: the matching order; BCE averaged over the 2 speakers, summed over the 4 valid frames, / 4 frames
    expected = F.binary_cross_entropy_with_logits(logits[:, :4], straight[:, :4], reduction="sum") / 2 / 4
    assert loss.item() == pytest.approx(expected.item()) and loss.item() == pytest.approx(loss_swapped.item())
    assert perm.tolist() == [[0]] and perm_swapped.tolist() == [[1]]  # permutations (0, 1) and (1, 0)
    wrong = F.binary_cross_entropy_with_logits(logits[:, :4], swapped[:, :4], reduction="sum") / 2 / 4
    assert wrong.item() > loss.item() + 1.0


def test_pit_bce_decides_the_order_per_chunk():
    logits = torch.tensor([[[4.0, -4.0], [4.0, -4.0], [-4.0, 4.0], [-4.0, 4.0]]])
    labels = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]])  # speaker 0 throughout
    whole, _ = pit_bce(logits, labels, torch.tensor([4]))
    chunked, perms = pit_bce(logits, labels, torch.tensor([4]), chunk_size=2)
    assert perms.tolist() == [[0, 1]]  # second chunk: the outputs swapped
    assert chunked.item() == pytest.approx(F.softplus(torch.tensor(-4.0)).item(), rel=1e-5)  # all right
    assert whole.item() > 1.0


def test_head_runs_chunks_independently_and_ignores_padding():
    torch.manual_seed(0)
    head = DiarizationHead(num_layers=2, input_dim=3, hidden_size=5, chunk_size=4).eval()
    x = torch.randn(2, 1, 10, 3)
    with torch.no_grad():
        out = head(x, torch.tensor([10]))
        # a chunk's outputs do not depend on the chunk before it
        second = head(x[:, :, 4:8], torch.tensor([4]))
        padded = head(torch.cat([x, torch.randn(2, 1, 3, 3) * 9], dim=2), torch.tensor([10]))
    assert out.shape == (1, 10, 2)
    assert torch.allclose(out[:, 4:8], second, atol=1e-6)
    assert torch.allclose(padded[:, :10], out, atol=1e-6)


# --------------------------------------------------------------------------- labels and turns

def test_frame_labels_follow_s3prl_rounding():
    # 160-sample frames at 16 kHz: [0.104, 0.256] s -> frames rint(10.4)=10 .. rint(25.6)=26 (exclusive)
    labels = frame_labels([["b", 0.104, 0.256], ["a", 0.0, 0.05]], 30, 160, SR, 2)
    assert labels.shape == (30, 2)
    assert np.flatnonzero(labels[:, 1]).tolist() == list(range(10, 26))  # "b" is the second speaker (sorted)
    assert np.flatnonzero(labels[:, 0]).tolist() == list(range(0, 5))
    with pytest.raises(ValueError, match="3 speakers"):
        frame_labels([["a", 0, 1], ["b", 0, 1], ["c", 0, 1]], 10, 160, SR, 2)


def test_activity_turns_and_predictions_with_a_median_filter():
    assert activity_turns(np.array([[1, 0], [1, 1], [0, 1], [0, 0]]), 0.02) == [["spk0", 0.0, 0.04],
                                                                                  ["spk1", 0.02, 0.06]]
    objective = DiarizationObjective(frame_shift=320, sample_rate=SR, thresholds=(0.5,), medians=(1, 3))
    logits = torch.full((1, 8, 2), -5.0)
    logits[0, 1:6, 0] = 5.0  # speaker 0 on frames 1-5
    logits[0, 3, 1] = 5.0  # a one-frame blip on speaker 1: the 3-frame median filter removes it
    (pred,) = objective.predict(logits, torch.tensor([8]))
    assert pred == {"th0.5_med1": [["spk0", 0.02, 0.12], ["spk1", 0.06, 0.08]], "th0.5_med3": [["spk0", 0.02, 0.12]]}


# --------------------------------------------------------------------------- DER

def test_der_counts_hand_worked():
    # reference A [0, 4], B [3, 6]; system s1 [0, 2.5] + [5.5, 7], s2 [2.5, 5].
    # Overlap time: A-s1 2.5, A-s2 1.5, B-s1 0.5, B-s2 2.0 -> mapping A=s1, B=s2 (4.5 s).
    # [0, 2.5) A / s1 ok; [2.5, 3) A / s2: confusion 0.5; [3, 4) A+B / s2: missed 1 (s2=B right);
    # [4, 5) B / s2 ok; [5, 5.5) B / -: missed 0.5; [5.5, 6) B / s1: confusion 0.5; [6, 7) - / s1: false alarm 1.
    # Reference speaker time 4 + 3 = 7 -> DER = (1.5 + 1 + 1) / 7 = 50 %.
    ref = [["A", 0.0, 4.0], ["B", 3.0, 6.0]]
    hyp = [["s1", 0.0, 2.5], ["s2", 2.5, 5.0], ["s1", 5.5, 7.0]]
    c = der_counts(ref, hyp)
    assert (c.scored, c.missed, c.false_alarm, c.confusion) == pytest.approx((7.0, 1.5, 1.0, 1.0))
    assert c.der == pytest.approx(50.0)
    # speaker names do not matter, overlapping turns of one speaker are merged
    assert der_counts(ref, [["z", 0, 2.5], ["q", 2.5, 5], ["z", 5.5, 7], ["z", 1, 2]]).der == pytest.approx(50.0)
    # the corpus DER pools the times: (3.5 + 1) / (7 + 1) = 56.25 %, not the mean of 50 % and 100 %
    total = corpus_der([ref, [["C", 0.0, 1.0]]], [hyp, []])
    assert total.der == pytest.approx(56.25)
    assert der_counts(ref, []).der == 100.0 and der_counts(ref, ref).der == 0.0


def test_score_is_the_lowest_setting_der():
    objective = DiarizationObjective(frame_shift=160, thresholds=(0.3, 0.5), medians=(1,))
    targets = [{"segments": [["A", 0.0, 1.0]], "duration": 2.0}]
    predictions = [{"th0.3_med1": [["spk0", 0.0, 2.0]], "th0.5_med1": [["spk0", 0.0, 1.5]]}]
    assert objective.setting_ders(targets, predictions) == pytest.approx({"th0.3_med1": 100.0, "th0.5_med1": 50.0})
    assert objective.score(targets, predictions) == pytest.approx(50.0)


# --------------------------------------------------------------------------- RTTM

def test_rttm_round_trip_and_errors_name_the_line():
    turns = [["spk1", 0.5, 1.75], ["spk2", 1.25, 3.0]]
    text = format_rttm("mix-1", turns)
    assert text.splitlines()[0] == "SPEAKER mix-1 1 0.500 1.250 <NA> <NA> spk1 <NA> <NA>"
    assert parse_rttm(text + "SPKR-INFO mix-1 1 <NA> <NA> <NA> unknown spk1 <NA>\n") == {"mix-1": turns}
    tabbed = "SPEAKER\tm\t1\t0.37\t8.34\t<NA>\t<NA>\t7976\t<NA>\n"  # s3prl's prepare_diarization.py writes tabs
    assert parse_rttm(tabbed) == {"m": [["7976", 0.37, pytest.approx(8.71)]]}
    with pytest.raises(ValueError, match=r"x\.rttm:2: onset and duration must be numbers"):
        parse_rttm(text.splitlines()[0] + "\nSPEAKER m 1 abc 1.0 <NA> <NA> s <NA>\n", "x.rttm")
    with pytest.raises(ValueError, match=r"x\.rttm:1: an RTTM line has at least 9 fields"):
        parse_rttm("SPEAKER m 1 0.0 1.0\n", "x.rttm")
    with pytest.raises(ValueError, match=r"x\.rttm:1: needs onset >= 0 and duration > 0"):
        parse_rttm("SPEAKER m 1 0.0 0 <NA> <NA> s <NA>\n", "x.rttm")


# --------------------------------------------------------------------------- manifest checks

def _tone(freq: float, seconds: float) -> np.ndarray:
    return 0.3 * np.sin(2 * np.pi * freq * np.arange(int(seconds * SR)) / SR)


def _write_sd_manifest(root, rows_by_split):
    folder = root / "sd"
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, rows in rows_by_split.items():
        out = []
        for k, segments in enumerate(rows):
            seed = [k, len(split)]  # a different noise per row: no dev/test audio equals a training one
            wav = (0.01 * np.random.default_rng(seed).standard_normal(SR * 2)).astype(np.float32)
            rel = f"wav/{split}-{k}.wav"
            sf.write(folder / rel, wav, SR)
            out.append({"id": f"{split}-{k}", "audio": rel, "sample_rate": SR, "num_samples": wav.size,
                        "speaker": "x", "segments": segments})
        splits[split] = out
    write_task_manifest(folder, task="sd", corpus="t", version="1", label_field="segments", labels=[], splits=splits)
    return load_task_manifest(folder)


def test_check_refuses_bad_turns_naming_file_line_and_id(tmp_path):
    good = [["a", 0.0, 1.0], ["b", 0.5, 2.0]]
    manifest = _write_sd_manifest(tmp_path, {
        "train": [good, [["a", 0.0, 2.5], ["b", 0.0, 1.0]]],  # line 2: ends after the 2-s audio
        "dev": [[["a", 0, 1], ["b", 0, 1], ["c", 0, 1]]],  # three speakers
        "test": [[["a", 1.0, 0.5]], [["a", 0, 1], "junk"]]})  # end before start; a turn that is not a list
    task = get_task("sd")
    with pytest.raises(ManifestError) as err:
        task.check_manifest(manifest)
    text = str(err.value)
    assert "4 row(s) with unusable 'segments' turns" in text
    assert f"{tmp_path / 'sd' / 'train.jsonl'}:2 id='train-1': turn 0 ['a', 0.0, 2.5] ends after the audio" in text
    assert "dev.jsonl:1 id='dev-0': 3 speakers ['a', 'b', 'c']; the head has 2 outputs" in text
    assert "test.jsonl:1 id='test-0': turn 0 ['a', 1.0, 0.5] needs 0 <= start < end" in text
    assert "test.jsonl:2 id='test-1': turn 1 is not [speaker, start_s, end_s]: 'junk'" in text


def test_check_refuses_a_mixture_without_turns(tmp_path):
    manifest = _write_sd_manifest(tmp_path, {"train": [[["a", 0, 1]], []], "dev": [[["a", 0, 1]]],
                                             "test": [[["a", 0, 1]]]})
    with pytest.raises(ValueError, match=r"train\.jsonl: 1 row\(s\) lack the 'segments' label, e\.g\. \['train-1'\]"):
        get_task("sd").check_manifest(manifest)


def test_setup_needs_the_upstream_frame_rate(tmp_path):
    manifest = _write_sd_manifest(tmp_path, {s: [[["a", 0, 1]]] for s in ("train", "dev", "test")})
    task = get_task("sd")
    head = task.load_recipe("ci").head
    with pytest.raises(ValueError, match="needs downsample_rate="):
        task.kind.setup(task, manifest, head, 3, 16, None)
    setup = task.kind.setup(task, manifest, head, 3, 16, None, downsample_rate=320, sample_rate=SR)
    assert setup.objective.seconds_per_frame == 0.02
    assert setup.target_of(manifest.splits["train"][0]) == {"segments": [["a", 0.0, 1.0]], "duration": 2.0}


# --------------------------------------------------------------------------- LibriMix preparer

def _kaldi_dir(folder, recordings, rttm_lines=None):
    """A Kaldi-style data directory as s3prl's prepare_diarization.py writes it (tabs in the rttm)."""
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    scp, dur, rttm = [], [], []
    for rec, (seconds, turns) in recordings.items():
        path = folder / "wav" / f"{rec}.wav"
        sf.write(path, np.zeros(int(seconds * SR), dtype=np.float32) + 0.01, SR)
        scp.append(f"{rec} {path}\n")
        dur.append(f"{rec} {seconds}\n")
        rttm += [f"SPEAKER\t{rec}\t1\t{s}\t{e - s}\t<NA>\t<NA>\t{spk}\t<NA>\n" for spk, s, e in turns]
    (folder / "wav.scp").write_text("".join(scp))
    (folder / "reco2dur").write_text("".join(dur))
    (folder / "rttm").write_text("".join(rttm_lines if rttm_lines is not None else rttm))


def _librimix(root):
    for split in ("train", "dev", "test"):
        _kaldi_dir(root / split, {f"{split}-a_{split}-b": (1.5, [("100", 0.1, 1.0), ("200", 0.6, 1.4)]),
                                  f"{split}-c_{split}-d": (1.0, [("300", 0.0, 0.9), ("400", 0.2, 0.8)])})


def test_librimix_preparer_writes_the_rttm_turns_into_rows(tmp_path):
    _librimix(tmp_path / "data")
    folder = prepare_librimix(tmp_path / "data", tmp_path / "out")
    manifest = load_task_manifest(folder)
    get_task("sd").check_manifest(manifest)
    (first, second) = manifest.splits["dev"]
    assert first.id == "dev-a_dev-b" and first.num_samples == int(1.5 * SR) and first.speaker == "100+200"
    assert first.targets["segments"] == [["100", 0.1, 1.0], ["200", 0.6, pytest.approx(1.4)]]
    assert manifest.corpus == "librimix" and manifest.label_field == "segments"


def test_librimix_preparer_names_file_and_line_of_bad_input(tmp_path):
    root = tmp_path / "data"
    _librimix(root)
    lines = (root / "dev" / "rttm").read_text().splitlines(keepends=True)
    lines[2] = "SPEAKER dev-c_dev-d 1 zero 0.9 <NA> <NA> 300 <NA>\n"  # line 3 does not parse
    (root / "dev" / "rttm").write_text("".join(lines))
    _kaldi_dir(root / "test", {"t1": (1.0, [("1", 0.0, 1.5)]),  # ends after the 1-s audio
                               "t2": (1.0, [("1", 0, 0.5), ("2", 0, 0.5), ("3", 0.5, 1)]),  # 3 speakers
                               "t3": (1.0, []),  # no turn
                               "t4": (1.0, [("1", 0.0, 0.5), ("2", 0.25, 1.0)])})
    with pytest.raises(PrepareError) as err:
        prepare_librimix(root, tmp_path / "out")
    text = str(err.value)
    assert f"{root / 'dev' / 'rttm'}:3: onset and duration must be numbers, got 'zero' and '0.9'" in text
    assert f"{root / 'test' / 'rttm'}:1: recording 't1': turn 0 ['1', 0.0, 1.5] ends after the audio" in text
    assert f"{root / 'test' / 'rttm'}:2,3,4: recording 't2': 3 speakers" in text
    assert f"{root / 'test' / 'wav.scp'}:3: recording 't3' has no turn in" in text
    assert not (tmp_path / "out" / "sd" / "meta.json").exists()
    folder = prepare_librimix(root, tmp_path / "out", skip_bad=True)  # the bad recordings are left out
    manifest = load_task_manifest(folder)
    assert [u.id for u in manifest.splits["dev"]] == ["dev-a_dev-b"]
    assert [u.id for u in manifest.splits["test"]] == ["t4"]


# --------------------------------------------------------------------------- demo mixer

def test_demo_mixer_places_sources_and_writes_their_speech_spans(tmp_path):
    from recipes.prepare.demo_sd import mix, trivial_der

    lead, trail = 0.1, 0.05  # seconds of silence around the speech, as demo._render puts them
    jobs = []
    for k, seconds in enumerate((1.15, 0.65)):
        path = f"audio/src/{k}.wav"
        (tmp_path / "audio" / "src").mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / path, np.full(int(seconds * SR), 0.1, dtype=np.float32), SR)
        jobs.append({"path": path, "lead": lead, "trail": trail})
    mixture = {"sources": [{"job": jobs[0], "speaker": "A"}, {"job": jobs[1], "speaker": "B", "start": 0.5}]}
    wav, turns = mix(tmp_path, mixture)
    # A speaks [0.1, 1.1); B's speech starts half-way into A's (0.1 + 0.5 s), its file 0.1 s before: at 0.5 s
    assert turns == [["A", 0.1, 1.1], ["B", 0.6, 1.1]]
    assert len(wav) == int(1.15 * SR) and wav[int(0.7 * SR)] == pytest.approx(0.2, abs=1e-3)
    rows = [{"segments": turns, "num_samples": len(wav), "sample_rate": SR}]
    # both speakers always on: false alarm (1.15 - 1.0) + (1.15 - 0.5) = 0.8 s over 1.5 s of speech
    assert trivial_der(rows) == {"always_both_speakers": pytest.approx(53.33, abs=0.01), "no_speaker": 100.0}


# --------------------------------------------------------------------------- end to end

def _tone_mixtures(root, counts=(16, 4, 4)):
    """Two 'speakers' (a low and a high tone) taking turns with overlap, 1.2-1.8 s mixtures."""
    rng = np.random.default_rng(0)
    folder = root / "sd"
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, n in zip(("train", "dev", "test"), counts):
        rows = []
        for k in range(n):
            total = rng.uniform(1.2, 1.8)
            a0, a1 = rng.uniform(0.0, 0.3), rng.uniform(0.6, 1.0)
            b0, b1 = rng.uniform(0.4, a1), rng.uniform(1.1, total)
            wav = 0.01 * rng.standard_normal(int(total * SR))
            for freq, s, e in ((400.0, a0, a1), (2400.0, b0, b1)):
                wav[int(s * SR):int(e * SR)] += _tone(freq, 2.0)[: int(e * SR) - int(s * SR)]
            rel = f"wav/{split}-{k}.wav"
            sf.write(folder / rel, wav.astype(np.float32), SR)
            rows.append({"id": f"{split}-{k}", "audio": rel, "sample_rate": SR, "num_samples": len(wav),
                         "speaker": "lo+hi", "segments": [["lo", round(a0, 3), round(a1, 3)],
                                                          ["hi", round(b0, 3), round(b1, 3)]]})
        splits[split] = rows
    write_task_manifest(folder, task="sd", corpus="tones", version="1", label_field="segments", labels=[],
                        splits=splits)
    return splits


def test_a_short_run_learns_who_speaks_when(tmp_path):
    from recipes.prepare.demo_sd import trivial_der
    from superbench.records import record_path
    from superbench.runner import run
    from superbench.testing import ToneUpstream, scratch_run_options

    splits = _tone_mixtures(tmp_path)
    opts = scratch_run_options(tmp_path, overrides={"steps": 60, "eval_interval": 30, "batch_size": 4,
                                                    "lr_grid": [1e-2], "hidden_size": 16})
    (rec,) = run(ToneUpstream(), [get_task("sd")], tmp_path, opts)
    baseline = trivial_der(splits["test"])["always_both_speakers"]
    assert rec.metric == "der" and not rec.higher_is_better
    assert baseline > 100 and 0 <= rec.test < 20, (rec.test, baseline)  # 60 updates: about 1 %; 1 update: 100 %
    beside = record_path(tmp_path / "results", rec.run_key()).parent  # the record's artifacts sit beside it
    lines = [json.loads(x) for x in (beside / rec.artifacts["predictions"]).read_text().splitlines() if x.strip()]
    test_rows = [x for x in lines if x["split"] == "test"]
    assert len(test_rows) == 4 and set(test_rows[0]["prediction"]) == {
        f"th{t:g}_med{m}" for m in (1, 11) for t in (0.3, 0.4, 0.5, 0.6, 0.7)}
    turns = test_rows[0]["prediction"]["th0.5_med1"]
    assert turns and all(s.startswith("spk") and 0 <= a < b <= 1.8 + 1e-9 for s, a, b in turns)
    assert test_rows[0]["reference"]["segments"] == splits["test"][0]["segments"]
    assert math.isfinite(rec.dev)
