"""Speech translation (downstreams.seq2seq): BLEU as sacreBLEU's command line, beam search, learning, checks."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip("sentencepiece")
pytest.importorskip("sacrebleu")

from downstreams.seq2seq import (  # noqa: E402
    EOS,
    CharVocab,
    Seq2SeqHead,
    Seq2SeqHeadConfig,
    Seq2SeqTranslation,
    TranslationObjective,
    beam_search,
    beam_search_batch,
    greedy_batch,
)
from superbench.features.extraction import extract_features  # noqa: E402
from superbench.manifest import ManifestError, load_task_manifest, write_task_manifest  # noqa: E402
from superbench.recipe import TrainConfig  # noqa: E402
from superbench.testing import SR, TONES, ToneUpstream, _tone  # noqa: E402
from superbench.training import train  # noqa: E402
from superbench.uncertainty import confidence_interval  # noqa: E402

HYPS = ["Das Haus ist klein.", "Der Hund läuft schnell nach Hause!", "ja", "Wir sehen uns morgen , oder?",
        "Ein völlig anderer Satz"]
REFS = ["Das Haus ist sehr klein.", "Der Hund rennt schnell nach Hause!", "Ja", "Wir sehen uns morgen, oder?",
        "Kein Treffer hier"]


def st_task():
    import importlib

    return importlib.import_module("recipes.st").TASK


def objective(texts=REFS) -> TranslationObjective:
    return TranslationObjective(CharVocab.train(texts), beam=2)


def test_bleu_is_sacrebleus_command_line_and_its_units_reproduce_it(tmp_path):
    (tmp_path / "ref.txt").write_text("".join(r + "\n" for r in REFS), encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("".join(h + "\n" for h in HYPS), encoding="utf-8")
    cli = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i", str(tmp_path / "hyp.txt"),
                          "-b", "-w", "6"], capture_output=True, text=True, check=True)
    obj = objective()
    score = obj.score(REFS, HYPS)
    assert score == pytest.approx(float(cli.stdout.strip()), abs=1e-6)
    units = obj.unit_scores([f"u{i}" for i in range(len(REFS))], REFS, HYPS)["bleu"]
    assert units.statistic == "bleu" and units.n == len(REFS)
    assert units.value() == pytest.approx(score, abs=1e-9)
    # each bootstrap draw is corpus BLEU of the drawn sentences: one draw checked against sacreBLEU itself
    import sacrebleu

    pick = [0, 0, 3, 4, 1]
    weights = np.bincount(pick, minlength=len(REFS)).astype(float)[None]
    drawn = sacrebleu.corpus_bleu([HYPS[i] for i in pick], [[REFS[i] for i in pick]]).score
    assert units.evaluate(weights)[0] == pytest.approx(drawn, abs=1e-9)
    ci = confidence_interval([[units]], resamples=200)
    low, high = ci.low, ci.high
    assert 0.0 <= low <= score <= high <= 100.0
    # no match at all, and an empty hypothesis, are 0 as in sacreBLEU
    none = obj.unit_scores(["a"], ["abc def"], ["xyz"])["bleu"]
    assert none.value() == 0.0 == obj.score(["abc def"], ["xyz"])
    assert obj.unit_scores(["a"], ["abc"], [""])["bleu"].value() == 0.0 == obj.score(["abc"], [""])
    shown = obj.shown(REFS[0], HYPS[0])
    assert shown["reference"] == REFS[0] and shown["prediction"] == HYPS[0] and 0 < shown["sentence_bleu"] < 100


def test_char_vocabulary_gives_the_text_back():
    vocab = CharVocab.train(REFS)
    for text in REFS:
        assert vocab.decode(vocab.encode(text)) == text
    assert CharVocab.train(REFS).model_proto == vocab.model_proto  # deterministic


def test_beam_search_beats_greedy_on_a_hand_set_decoder():
    # tokens: 2 = </s>, 4 = A, 5 = B. First step A 0.6, B 0.4; after A: A 0.55, B 0.45; after B: B 0.95, A 0.05;
    # after two tokens: </s>. Greedy follows A A (0.33); the best path is B B (0.38).
    V = 6

    def dist(probs: dict[int, float]) -> torch.Tensor:
        p = torch.full((V,), 1e-9)
        for k, v in probs.items():
            p[k] = v
        return torch.log(p / p.sum())

    table = {(): {4: 0.6, 5: 0.4}, (4,): {4: 0.55, 5: 0.45}, (5,): {5: 0.95, 4: 0.05}}

    def step(prefixes: torch.Tensor) -> torch.Tensor:
        return torch.stack([dist(table.get(tuple(p[1:].tolist()), {EOS: 1.0})) for p in prefixes])

    greedy = beam_search(step, beam=1, max_len=10)
    best = beam_search(step, beam=2, max_len=10)
    assert greedy == [4, 4] and best == [5, 5]
    assert math.log(0.4 * 0.95) > math.log(0.6 * 0.55)
    assert beam_search(step, beam=2, max_len=1) == []  # </s> forced at the length limit


def _translation_corpus(root: Path, n=(48, 8, 8), seed=0, drop_target_of: str | None = None) -> Path:
    """Tone sequences 'translated' to words: tone k says WORDS[k]; the target is the words joined by spaces."""
    words = ["Haus", "Baum", "Katze", "Mond"]
    rng = np.random.default_rng(seed)
    folder = root / "st"
    (folder / "wav").mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, count in zip(("train", "dev", "test"), n):
        rows = []
        for k in range(count):
            seq = [int(i) for i in rng.integers(0, 4, size=int(rng.integers(4, 7)))]  # BLEU needs 4-grams
            wav = np.concatenate([_tone(TONES[p], 0.12, rng) for p in seq]).astype(np.float32)
            rel = f"wav/{split}_{k}.wav"
            sf.write(folder / rel, wav, SR)
            row = {"id": f"{split}-{k}", "audio": rel, "sample_rate": SR, "num_samples": wav.size, "speaker": "s",
                   "translation": " ".join(words[p] for p in seq)}
            if f"{split}-{k}" == drop_target_of:
                del row["translation"]
            rows.append(row)
        splits[split] = rows
    write_task_manifest(folder, task="st", corpus="tones", version="1", label_field="translation", labels=[],
                        splits=splits)
    return folder


def test_the_kind_learns_a_tiny_translation_corpus(tmp_path):
    task = st_task()
    manifest = load_task_manifest(_translation_corpus(tmp_path))
    task.check_manifest(manifest)
    upstream = ToneUpstream()
    cache = extract_features(upstream, manifest, "frame", root=tmp_path / "cache", progress=False)
    head_cfg = Seq2SeqHeadConfig(conv_kernel_sizes=(3,), conv_channels=64, encoder_embed_dim=32,
                                 encoder_ffn_embed_dim=64, encoder_layers=1, encoder_attention_heads=2,
                                 decoder_embed_dim=32, decoder_ffn_embed_dim=64, decoder_layers=1,
                                 decoder_attention_heads=2, dropout=0.0, beam=3, max_len_b=40)
    setup = task.kind.setup(task, manifest, head_cfg, upstream.num_layers, upstream.hidden_size, None)

    def data(split):
        rows = manifest.splits[split]
        return [u.id for u in rows], [setup.target_of(u) for u in rows]

    cfg = TrainConfig(steps=600, batch_size=8, lr=3e-3, eval_interval=200, grad_clip=10.0)
    result = train(setup.make_head, setup.objective, cache, data("train"), data("dev"), data("test"), cfg,
                   progress=False)
    assert result.test > 50.0, (result, result.predictions["test"][:3])
    assert len(result.predictions["test"]) == 8 and all(isinstance(p, str) for p in result.predictions["test"])
    # greedy decoding of the whole batch equals one-hypothesis beam search, utterance by utterance
    head = setup.make_head()
    head.load_state_dict(result.head_state)
    head.eval()
    ids = data("test")[0]
    x, frames = cache.batch(ids)
    with torch.no_grad():
        out = head(x, frames)
        limits = setup.objective.max_lens(head.output_lengths(frames))
        assert greedy_batch(out, limits) == [beam_search(out.step_fn(i), 1, limits[i]) for i in range(len(ids))]


def _random_head(seed: int, vocab: int = 23) -> Seq2SeqHead:
    torch.manual_seed(seed)
    cfg = Seq2SeqHeadConfig(conv_kernel_sizes=(3,), conv_channels=16, encoder_embed_dim=16, encoder_ffn_embed_dim=32,
                            encoder_layers=1, encoder_attention_heads=2, decoder_embed_dim=24,
                            decoder_ffn_embed_dim=32, decoder_layers=2, decoder_attention_heads=2, dropout=0.1)
    head = Seq2SeqHead(num_layers=3, input_dim=8, vocab_size=vocab, cfg=cfg)
    with torch.no_grad():  # a sharper output layer than the init's, so hypotheses differ and end at different steps
        head.output.weight.mul_(12.0)
    return head.eval()


def test_incremental_decoder_step_gives_the_full_decoders_logits():
    head = _random_head(0)
    with torch.no_grad():
        out = head(torch.randn(3, 3, 30, 8), torch.tensor([30, 22, 9]))  # (layers, batch, frames, dim)
        prefix = torch.randint(3, 23, (2, 6))
        prefix[:, 0] = 2  # </s> starts every decoder input
        rows = torch.tensor([2, 0])
        full = out.logits(prefix, rows)
        state = None
        for t in range(prefix.shape[1]):
            step, state = head.decode_step(out.memory[rows], out.padding[rows], prefix[:, t], t, state)
            assert torch.allclose(step, full[:, t], atol=1e-4), t


@pytest.mark.parametrize("seed,beam", [(1, 2), (2, 4), (3, 5)])
def test_batched_beam_search_equals_the_one_utterance_search_on_a_random_model(seed, beam):
    head = _random_head(seed)
    lengths = torch.tensor([40, 31, 17, 8, 25])
    with torch.no_grad():
        out = head(torch.randn(3, 5, 40, 8), lengths)
        limits = [12, 5, 9, 1, 20]  # each utterance its own length limit, one of a single (forced </s>) token
        one_by_one = [beam_search(out.step_fn(i), beam, limits[i]) for i in range(5)]
        batched = beam_search_batch(out, beam, limits)
    assert batched == one_by_one
    assert len({tuple(x) for x in batched}) > 2 and batched[3] == []  # real, distinct searches


def test_a_row_without_translation_is_refused_naming_file_and_line(tmp_path):
    task = st_task()
    # absent: the manifest loader refuses it, naming the file and the row
    with pytest.raises(ManifestError, match=r"empty or absent 'translation':\n  dev\.jsonl id='dev-1'"):
        load_task_manifest(_translation_corpus(tmp_path / "a", n=(4, 2, 2), drop_target_of="dev-1"))
    # not a sentence: the kind refuses it before extraction, naming the file and the line
    folder = _translation_corpus(tmp_path / "b", n=(4, 2, 2))
    path = folder / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows[1]["translation"] = 42
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"rows whose 'translation' is not a sentence[\s\S]*test\.jsonl:2 "
                                            r"id='test-1': 'translation' is 42"):
        task.check_manifest(load_task_manifest(folder))


def test_missing_packages_name_the_extra(monkeypatch):
    import importlib

    import downstreams.seq2seq as seq2seq

    real = importlib.import_module

    def fake(name, *args):
        if name == "sacrebleu":
            raise ImportError("No module named 'sacrebleu'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(seq2seq.MissingTranslationPackage, match=r"superbench\[translation\]"):
        Seq2SeqTranslation().check(st_task(), None)
    with pytest.raises(ImportError, match=r"pip install 'superbench\[translation\]'"):
        TranslationObjective(None)


def test_recipe_profiles_follow_s3prls_config():
    task = st_task()
    recipe = task.load_recipe("superb")
    head, train_cfg = recipe.head, recipe.train
    assert (head.encoder_layers, head.decoder_layers, head.encoder_embed_dim, head.encoder_attention_heads,
            head.encoder_ffn_embed_dim, head.conv_kernel_sizes, head.conv_channels) == (3, 3, 512, 8, 2048, (5, 5),
                                                                                        1024)
    assert (head.beam, head.label_smoothing, head.max_len_b) == (20, 0.1, 400)
    assert (train_cfg.steps, train_cfg.lr, train_cfg.grad_accum, train_cfg.grad_clip) == (32000, 1e-3, 8, 10.0)
    assert (train_cfg.scheduler, train_cfg.warmup_steps) == ("sqrt_decay_schedule_with_warmup", 10000)
    assert task.metric == "bleu" and task.higher_is_better and task.info.metric.high == 100.0
    for profile in ("fast", "ci"):
        assert task.load_recipe(profile).head.beam < 20
    head_module = Seq2SeqHead(3, 16, 30, task.load_recipe("ci").head)
    out = head_module(torch.randn(3, 2, 50, 16), torch.tensor([50, 31]))
    assert out.memory.shape[:2] == (2, 13) and head_module.output_lengths(torch.tensor([50, 31])).tolist() == [13, 8]
    assert json.dumps(recipe.deviations)
