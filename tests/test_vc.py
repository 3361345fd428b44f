"""The voice-conversion kind (downstreams/vc.py): the Taco2-AR head, its objective's loss, the manifest checks, the
recipe against s3prl's config, and the VCC2020 preparer on a fake tree."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from downstreams.vc import Taco2ARHead, VCHeadConfig
from recipes.prepare import PrepareError
from recipes.prepare.vcc2020 import EVAL_IDS, F0_RANGES, SOURCES, TARGETS, prepare_vcc2020
from superbench.manifest import ManifestError
from superbench.manifest import load_task_manifest as load_manifest
from superbench.tasks import get_task

SMALL = VCHeadConfig(sample_rate=16000, hidden_dim=16, econv_layers=1, econv_chans=8, prenet_dim=8, lstmp_layers=2,
                     prenet_dropout=0.0, lstmp_dropout=0.0, encoder_dropout=0.0)


def test_superb_profile_is_s3prls_config():
    recipe = get_task("vc").load_recipe("superb")
    h, t = recipe.head, recipe.train
    assert (h.sample_rate, h.n_fft, h.hop, h.n_mels, h.fmin, h.fmax, h.gl_iters) == (24000, 1024, 256, 80, 80, 7600, 64)
    assert (h.hidden_dim, h.prenet_layers, h.prenet_dim, h.prenet_dropout, h.lstmp_layers, h.lstmp_dropout) == (
        1024, 2, 256, 0.5, 2, 0.2)
    assert (h.econv_layers, h.econv_chans, h.econv_filts) == (3, 512, 5)
    assert (h.vocoder, h.asr) == ("griffin-lim", "pocketsphinx")
    assert (t.steps, t.batch_size, t.lr, t.scheduler, t.warmup_steps, t.grad_clip, t.eval_interval) == (
        10000, 6, 1e-4, "linear_schedule_with_warmup", 4000, 1.0, 1000)
    assert t.weight_decay > 0  # AdamW
    assert get_task("vc").info.metric.direction == "lower is better"


def test_head_runs_at_the_mel_frame_rate_and_decodes_autoregressively():
    # fbank: 160 samples per frame at 16 kHz; mel hop 256 at 16 kHz: 0.625 mel frames per upstream frame
    head = Taco2ARHead(num_layers=3, input_dim=5, cfg=SMALL, resample_ratio=16000 / 256 * 160 / 16000).eval()
    features = torch.randn(3, 2, 40, 5)
    lengths = torch.tensor([40, 24])
    out = head(features, lengths)
    assert out.states.shape == (2, 25, 16) and out.lengths.tolist() == [25, 15]
    assert head.output_lengths(lengths).tolist() == [25, 15]
    with torch.no_grad():
        free = out.decode(None)
        # fed its own output as the teacher, the decoder gives back exactly what it generated: the AR loop feeds
        # frame t (standardised) into step t + 1, as teacher forcing does with the target
        forced = out.decode(free)
    assert free.shape == (2, 25, 80)
    torch.testing.assert_close(forced, free)
    with torch.no_grad():
        other = out.decode(free + 1.0)
    assert not torch.allclose(other[:, 1:], free[:, 1:]) and torch.allclose(other[:, 0], free[:, 0])


def test_standardised_output_is_de_standardised_with_the_target_statistics():
    features, lengths = torch.randn(1, 2, 12, 4), torch.tensor([12, 7])
    mean, scale = torch.linspace(-5.0, -1.0, 80), torch.linspace(0.5, 2.0, 80)
    outputs = {}
    for flag in (False, True):
        torch.manual_seed(0)
        head = Taco2ARHead(1, 4, replace(SMALL, standardised_output=flag), 1.0).eval()
        head.set_stats(mean, scale)
        with torch.no_grad():
            outputs[flag] = head(features, lengths).decode(None)
            head.proj.weight.zero_()
            head.proj.bias.zero_()
            zero = head(features, lengths).decode(None)
        # an output layer of zeros gives the speaker's mean frame when it predicts the standardised log-mel
        torch.testing.assert_close(zero, (mean if flag else torch.zeros(80)).expand(2, 12, 80))
    # same weights: the first frame (its prenet input is zeros either way) is the raw one times scale plus mean
    torch.testing.assert_close(outputs[True][:, 0], outputs[False][:, 0] * scale + mean)
    assert get_task("vc").load_recipe("fast").head.standardised_output
    assert not get_task("vc").load_recipe("superb").head.standardised_output


def test_prenet_dropout_at_inference_is_seeded():
    cfg = replace(SMALL, prenet_dropout=0.5)
    head = Taco2ARHead(1, 4, cfg, 1.0).eval()
    out = head(torch.randn(1, 2, 10, 4), torch.tensor([10, 7]))
    with torch.no_grad():
        a, b = out.decode(None), out.decode(None)
    torch.testing.assert_close(a, b)


def _tone(path: Path, seconds: float, f0: float, sr: int = 16000) -> None:
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, (0.2 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), sr)


def _manifest(root: Path, *, mixed_targets: bool = False, missing_reference: bool = False, no_text: bool = False):
    from superbench.manifest import Fold, write_task_manifest

    (root / "audio").mkdir(parents=True)
    rows = {}
    for split, n in (("train", 4), ("dev", 2)):
        rows[split] = []
        for k in range(n):
            _tone(root / "audio" / f"t-{split}{k}.wav", 0.5, 200 + 10 * k)
            rows[split].append({"id": f"t-{split}{k}", "audio": f"audio/t-{split}{k}.wav", "sample_rate": 16000,
                                "num_samples": 8000, "speaker": "T", "conversion": {"target_speaker": "T",
                                                                                     "text": "A B"}})
    if mixed_targets:
        rows["train"][1]["conversion"]["target_speaker"] = "U"
    _tone(root / "audio" / "s0.wav", 0.5, 120)
    _tone(root / "audio" / "ref0.wav", 0.5, 220)
    test = {"id": "s0-to-T", "audio": "audio/s0.wav", "sample_rate": 16000, "num_samples": 8000, "speaker": "S",
            "conversion": {"target_speaker": "T", "reference": "../audio/ref0.wav", "text": "A B"}}
    if missing_reference:
        test["conversion"]["reference"] = "../audio/nowhere.wav"
    if no_text:
        del test["conversion"]["text"]
    rows["test"] = [test]
    return write_task_manifest(root / "vc", task="vc", corpus="fake", version="1", label_field="conversion",
                               labels=[], splits={k: [{**r, "audio": f"../{r['audio']}"} for r in v]
                                                  for k, v in rows.items()},
                               folds=[Fold("T", "train", "dev", "test")])


def test_check_accepts_a_good_manifest_and_names_bad_rows(tmp_path):
    pytest.importorskip("pyworld")
    task = get_task("vc")
    task.check_manifest(load_manifest(_manifest(tmp_path / "good")))
    with pytest.raises(ManifestError, match=r"test.jsonl:1 id='s0-to-T': reference .*nowhere.wav cannot be read"):
        task.check_manifest(load_manifest(_manifest(tmp_path / "ref", missing_reference=True)))
    with pytest.raises(ManifestError, match=r"test.jsonl:1 id='s0-to-T': a dev or test row needs the sentence"):
        task.check_manifest(load_manifest(_manifest(tmp_path / "text", no_text=True)))
    with pytest.raises(ManifestError, match=r"fold 'T': one model per target speaker, but its rows name \['T', 'U'\]"):
        task.check_manifest(load_manifest(_manifest(tmp_path / "mixed", mixed_targets=True)))


def test_loss_is_l1_on_standardised_mel_and_training_lowers_it(tmp_path):
    pytest.importorskip("pyworld")
    task = get_task("vc")
    manifest = load_manifest(_manifest(tmp_path / "m"))
    setup = task.kind.setup(task, manifest, SMALL, num_layers=2, hidden_size=6, layer=None, downsample_rate=160)
    objective = setup.objective
    rows = manifest.splits["train"]
    targets = [setup.target_of(u) for u in rows]
    mean, scale = objective.stats("T")
    mels = [objective.target_mel(t["reference"]) for t in targets]
    frames = torch.cat(mels).double()
    torch.testing.assert_close(mean, frames.mean(0).float())
    torch.testing.assert_close(scale, frames.std(0, unbiased=False).float())
    torch.manual_seed(0)
    head = setup.make_head()
    lengths = torch.full((len(rows),), 50)
    features = torch.randn(2, len(rows), 50, 6)
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = objective.loss(head(features, lengths), head.output_lengths(lengths), targets)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    torch.testing.assert_close(head.target_mean, mean)  # the speaker's statistics travel with the head
    assert losses[-1] < 0.5 * losses[0]
    # the loss is the mean absolute difference of the standardised frames both sides have
    with torch.no_grad():
        out = head(features, lengths)
        n = int(head.output_lengths(lengths)[0])
        teacher = torch.zeros(len(rows), out.states.shape[1], 80)
        for i, m in enumerate(mels):
            teacher[i, :len(m[:n])] = m[:n]
        pred = out.decode(teacher)
        valid = min(n, len(mels[0]))
        expected = ((pred[:, :valid] - teacher[:, :valid]) / scale).abs().mean()
        torch.testing.assert_close(objective.loss(out, head.output_lengths(lengths), targets), expected)


# --------------------------------------------------------------------------- VCC2020 preparer

def _vcc_tree(root: Path, drop: tuple[str, ...] = (), bad: tuple[str, ...] = (), texts: bool = True) -> Path:
    for spk in SOURCES + TARGETS:
        (root / spk).mkdir(parents=True)
        ids = list(EVAL_IDS[:2]) + (["E10001", "E10002", "E20001", "E10061"] if spk in TARGETS else [])
        for utt in ids:
            if f"{spk}/{utt}" in drop:
                continue
            path = root / spk / f"{utt}.wav"
            if f"{spk}/{utt}" in bad:
                path.write_bytes(b"not audio")
            else:
                sf.write(path, np.zeros(2400, dtype=np.float32) + 0.01, 24000)
    (root / "prompts").mkdir()
    lines = [f"{u} Sentence {u}." for u in ("E10001", "E10002", "E20001", "E10061", *EVAL_IDS)]
    (root / "prompts" / "Eng_transcriptions.txt").write_text("\n".join(lines if texts else lines[:3]) + "\n")
    return root


def test_vcc2020_preparer_writes_one_fold_per_target(tmp_path, monkeypatch):
    import recipes.prepare.vcc2020 as vcc

    monkeypatch.setattr(vcc, "EVAL_IDS", EVAL_IDS[:2])
    folder = prepare_vcc2020(_vcc_tree(tmp_path / "vcc"), tmp_path / "out")
    meta = json.loads((folder / "meta.json").read_text())
    assert [f["name"] for f in meta["folds"]] == list(TARGETS)
    train = [json.loads(line) for line in (folder / "train_TEF1.jsonl").read_text().splitlines()]
    assert [r["id"] for r in train] == ["TEF1_E10001", "TEF1_E10002", "TEF1_E20001"]
    assert train[0]["conversion"] == {"target_speaker": "TEF1", "text": "Sentence E10001.", "f0_range": [127, 405]}
    test = [json.loads(line) for line in (folder / "test_TEM2.jsonl").read_text().splitlines()]
    assert len(test) == len(SOURCES) * 2 and test[0]["id"] == "SEF1_E30001_to_TEM2"
    assert test[0]["conversion"]["reference"].endswith("TEM2/E30001.wav")
    assert test[0]["conversion"]["f0_range"] == list(F0_RANGES["TEM2"]) and test[0]["sample_rate"] == 24000


def test_vcc2020_preparer_names_every_bad_input(tmp_path, monkeypatch):
    import recipes.prepare.vcc2020 as vcc

    monkeypatch.setattr(vcc, "EVAL_IDS", EVAL_IDS[:2])
    root = _vcc_tree(tmp_path / "vcc", drop=("SEM1/E30002", "TEF2/E30001"), bad=("SEF2/E30001",))
    with pytest.raises(PrepareError) as err:
        prepare_vcc2020(root, tmp_path / "out")
    text = str(err.value)
    assert f"{root / 'SEM1' / 'E30002.wav'}: missing (evaluation utterance of source speaker SEM1)" in text
    assert f"{root / 'TEF2' / 'E30001.wav'}: missing (target TEF2's reference for SEF1/E30001.wav)" in text
    assert f"{root / 'SEF2' / 'E30001.wav'}: cannot be read" in text
    assert not (tmp_path / "out").exists()
    with pytest.raises(PrepareError, match=r"Eng_transcriptions.txt: no transcription of E30001"):
        prepare_vcc2020(_vcc_tree(tmp_path / "notext", texts=False), tmp_path / "out2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no speaker folder SEF1, SEF2"):
        prepare_vcc2020(tmp_path / "empty", tmp_path / "out3")


def test_published_vc_row_and_scores(tmp_path, capsys):
    from leaderboard.published import read_published_csv, shipped_files
    from leaderboard.score import suite_of
    from superbench.cli import main

    rows = read_published_csv(shipped_files()["superb-sg-vc-paper"])
    assert {(r.upstream, r.metric): r.value for r in rows} == {("FBANK", "mcd"): 8.47, ("FBANK", "wer"): 38.3,
                                                               ("FBANK", "asv"): 77.25}
    assert all("arXiv:2203.06849" in r.source and "Table 2" in r.source and "Parallel WaveGAN" in r.note
               for r in rows)
    assert suite_of("vc") == "sg"  # never in the SUPERB score
    db = tmp_path / "lb.db"
    assert main(["leaderboard", "import-published", "superb-sg-vc-paper", "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["leaderboard", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "VC MCD dB ↓" in out and "VC WER% ↓" in out and "VC ASV% ↑" in out
    assert "| FBANK (published) |" in out and "| 8.47 | 38.30 | 77.25 |" in out
