"""The eSpeak demo corpus: determinism, manifest contract, split hygiene, learnability."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from recipes.prepare import demo
from recipes.prepare.espeak import EXCLUDED_VARIANTS, Engine, list_variants, tokenize_ipa
from recipes.prepare.no_demo_part import NO_DEMO_PART
from recipes.se import TASK as SE
from recipes.ss import TASK as SS
from recipes.superb_sg import OOD_TASKS, SG_PART2_TASKS
from superbench.manifest import load_task_manifest


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    # the same SUPERBENCH_HOME as conftest's autouse fixture (which is not active yet at module scope),
    # so the tiny corpus is generated once per test session and shared
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SUPERBENCH_HOME", str(tmp_path_factory.getbasetemp() / "superbench-home"))
        out = demo.ensure_demo("tiny")
    return out, {p.parent.name: p.parent for p in out.glob("*/meta.json")}


def test_espeak_binding_speaks_and_transcribes():
    engine = Engine.get()
    assert engine.sample_rate == 22050
    wav = engine.synth("yes", "en-us+m3")
    assert wav.dtype == np.float32 and 0.1 < len(wav) / 22050 < 1.5 and np.abs(wav).max() > 0.05
    assert engine.phonemes("yes", "en-us") == ["j", "ɛ", "s"]
    assert tokenize_ipa("ð ə  k w ˈɪ k") == ["ð", "ə", "k", "w", "ɪ", "k"]
    variants = list_variants()
    assert "m3" in variants and "f2" in variants
    assert not any(v.lower().startswith(("robosoft", "klatt", "whisper")) for v in variants)
    assert "Demonic" not in variants and "croak" in EXCLUDED_VARIANTS


def test_unknown_voice_is_a_clear_error():
    with pytest.raises(RuntimeError, match="no voice 'en-us\\+nosuchvariant'"):
        Engine.get().synth("yes", "en-us+nosuchvariant")


#: The SUPERB-SG OOD-ASR tasks with a demo part (SBCSAE has none).
OOD_DEMO_TASKS = tuple(t for t in OOD_TASKS if t not in NO_DEMO_PART)
#: Built-in parts added after the SUPERB-SG part 2 ones: they draw after them, so every earlier part keeps its draws.
LATER_PARTS = ("vc",)


@pytest.fixture
def demo_task_names(builtin_task_names):
    """The demo's task folders: every built-in task but those it says it has no part for."""
    assert set(NO_DEMO_PART) <= builtin_task_names
    return builtin_task_names - set(NO_DEMO_PART)


def test_manifests_load_and_follow_the_contract(tiny, demo_task_names):
    out, dirs = tiny
    assert set(dirs) == demo_task_names
    ks = load_task_manifest(out / "ks")
    assert ks.labels == list(demo.KS_LABELS)
    for split in ("train", "dev", "test"):
        assert {u.label for u in ks.splits[split]} == set(demo.KS_LABELS)  # every class in every split
        assert all(u.num_samples == 16000 for u in ks.splits[split])
    spk = {s: {u.speaker for u in ks.splits[s] if u.label != "_silence_"} for s in ks.splits}
    assert not spk["train"] & spk["dev"] and not spk["train"] & spk["test"] and not spk["dev"] & spk["test"]

    info = sf.info(ks.splits["train"][0].audio)
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")

    sid = load_task_manifest(out / "sid")
    assert {u.label for u in sid.splits["test"]} == set(sid.labels)  # split within speaker
    assert all(u.label == u.speaker for u in sid.utterances())

    er = load_task_manifest(out / "er")
    assert [f.name for f in er.folds] == [f"fold{k}" for k in range(1, 6)]
    groups = [{u.speaker for u in er.splits[f"fold{k}_test"]} for k in range(1, 6)]
    for k, fold in enumerate(er.folds):
        train_dev = {u.speaker for u in er.splits[fold.train] + er.splits[fold.dev]}
        assert not train_dev & groups[k]
        n_pool = len(er.splits[fold.train]) + len(er.splits[fold.dev])
        assert len(er.splits[fold.dev]) == round(0.2 * n_pool)
    assert {u.label for u in er.splits["fold1_test"]} == set(demo.EMOTIONS)

    asr, pr = load_task_manifest(out / "asr"), load_task_manifest(out / "pr")
    texts = [u.text for u in asr.utterances()]
    assert len(set(texts)) == len(texts) and all(t == t.upper() for t in texts)
    assert {u.id for u in asr.utterances()} == {u.id for u in pr.utterances()}
    spk = {s: {u.speaker for u in asr.splits[s]} for s in asr.splits}
    assert not spk["train"] & spk["test"] and not spk["dev"] & spk["test"]
    inventory = set(pr.labels)
    assert all(set(u.phones.split()) <= inventory for u in pr.utterances())
    assert "ˈ" not in "".join(pr.labels)  # stress marks are not phones


def test_same_seed_gives_identical_corpus(tiny, tmp_path, demo_task_names):
    out, _ = tiny
    Engine.get().synth("state left over from another call", "en+f3")  # must not leak into the corpus
    again = tmp_path / "again"
    demo.prepare_demo(again, size="tiny", seed=0, workers=1)
    assert (again / "checksums.json").read_text() == (out / "checksums.json").read_text()
    for task in sorted(demo_task_names):
        for f in sorted((out / task).iterdir()):
            assert (again / task / f.name).read_bytes() == f.read_bytes(), f
    marker = json.loads((out / demo.MARKER).read_text())
    assert marker["seed"] == 0 and marker["summary"]["sid"]["speakers"] == demo.SIZES["tiny"].sid_speakers


def test_summary_counts_match_manifests(tiny):
    out, _ = tiny
    summary = demo.summarize_corpus(out)
    ks = load_task_manifest(out / "ks")
    assert summary["ks"]["utterances"] == len(ks.utterances()) == 12 * sum(demo.SIZES["tiny"].ks_per_class)
    assert summary["ks"]["minutes"] == pytest.approx(len(ks.utterances()) / 60, abs=0.01)
    assert summary["er"]["classes"] == 4
    assert "total audio" in demo.format_summary(summary)


def test_ensure_demo_reuses_a_complete_corpus(tiny, monkeypatch):
    out, _ = tiny
    assert demo.is_complete(out) and out == demo.demo_dir("tiny")
    monkeypatch.setattr(demo, "prepare_demo", lambda *a, **k: pytest.fail("regenerated a complete corpus"))
    assert demo.ensure_demo("tiny") == out


def test_incomplete_corpus_is_regenerated(tiny, monkeypatch):
    out, _ = tiny
    calls = []
    monkeypatch.setattr(demo, "prepare_demo", lambda o, size, seed: calls.append((o, size, seed)))
    marker = out / demo.MARKER
    saved = marker.read_text()
    marker.unlink()
    try:
        demo.ensure_demo("tiny")
    finally:
        marker.write_text(saved)
    assert calls == [(out, "tiny", 0)]


def test_unknown_size_is_refused():
    with pytest.raises(ValueError, match="unknown demo size 'huge'"):
        demo.demo_dir("huge")


@pytest.mark.parametrize("size", sorted(demo.SIZES))
def test_every_size_plans_distinct_sentences_for_all_tasks(size):
    cfg = demo.SIZES[size]
    plan = demo._Plan(cfg, demo.Jitter(), np.random.default_rng(0))
    texts = [j["text"] for j in plan.jobs if j["id"].startswith(("sid-", "asr-"))]
    assert len(texts) == len(set(texts)) == cfg.sid_speakers * sum(cfg.sid_per_speaker) + sum(cfg.asr_sentences)
    er_texts = {j["text"] for j in plan.jobs if j["id"].startswith("er-")}
    assert len(er_texts) == 5 * cfg.er_speakers_per_group * cfg.er_sentences and not er_texts & set(texts)


def test_demo_size_reads_the_data_syntax_every_command_shares():
    assert demo.demo_size("demo") == "default"
    assert demo.demo_size("demo:tiny") == "tiny"
    assert demo.demo_size("demo:") == ""  # left to ensure_demo / demo_dir to refuse or default
    for folder in ("data/demo", "/tmp/demo:tiny", "demos", "./demo"):
        assert demo.demo_size(folder) is None, folder


def test_enhancement_and_separation_parts_mix_at_their_drawn_levels(tiny):
    out, dirs = tiny
    se, ss = load_task_manifest(dirs["se"]), load_task_manifest(dirs["ss"])
    SE.check_manifest(se)  # every noisy file has its clean partner, same length, 16 kHz
    SS.check_manifest(ss)
    for manifest in (se, ss):
        spk = {s: {x for u in manifest.splits[s] for x in u.speaker.split("+")} for s in manifest.splits}
        assert not spk["train"] & spk["test"] and not spk["dev"] & spk["test"] and not spk["train"] & spk["dev"]
    for u in se.utterances():
        noisy = sf.read(u.audio, dtype="float64")[0]
        clean = sf.read(dirs["se"] / u.targets["sources"][0], dtype="float64")[0]
        snr = 10 * np.log10(np.sum(clean ** 2) / np.sum((noisy - clean) ** 2))
        assert u.targets["snr_db"] in (0.0, 5.0, 10.0, 15.0) and abs(snr - u.targets["snr_db"]) < 0.2, (u.id, snr)
    for u in ss.utterances():
        mix = sf.read(u.audio, dtype="float64")[0]
        s1, s2 = (sf.read(dirs["ss"] / p, dtype="float64")[0] for p in u.targets["sources"])
        assert np.abs(s1 + s2 - mix).max() < 1e-4  # mix_clean: the sum of the sources (16-bit files)
        level = 10 * np.log10(np.sum(s1 ** 2) / np.sum(s2 ** 2))
        assert 0.0 <= u.targets["level_db"] <= 5.0 and abs(level - u.targets["level_db"]) < 0.05
    # the unprocessed input's scores, the chance level, are kept in meta.json
    noisy_input = json.loads((dirs["se"] / "meta.json").read_text())["extra"]["noisy_input"]
    assert set(noisy_input) == {"train", "dev", "test"}
    assert all(1.0 <= v["pesq"] <= 4.65 and 0 < v["stoi"] <= 100 and v["undefined"] == 0 for v in noisy_input.values())
    mixture_input = json.loads((dirs["ss"] / "meta.json").read_text())["extra"]["mixture_input"]
    assert all(-5 < v["sisdr"] < 5 for v in mixture_input.values())  # sources 0-5 dB apart: about 0 dB on average


def test_cross_lingual_parts_speak_their_language_to_unseen_voices(tiny):
    from recipes.prepare import demo_ood_ar, demo_ood_es, demo_ood_zh

    out, _ = tiny
    scripts = {"ood_es": lambda c: c.isupper() and c.isascii() or c in "ÁÉÍÓÚÑÜ",
               "ood_zh": lambda c: "\u4e00" <= c <= "\u9fff", "ood_ar": lambda c: "\u0600" <= c <= "\u06ff"}
    for part in (demo_ood_es, demo_ood_zh, demo_ood_ar):
        m = load_task_manifest(out / part.TASK)
        (train, dev, test), (n_train, n_dev, n_test) = (m.splits[s] for s in ("train", "dev", "test")), \
            part.SIZES["tiny"][0]
        assert (len(train), len(dev), len(test)) == (n_train, n_dev, n_test)
        texts = [u.text for u in m.utterances()]
        assert len(set(texts)) == len(texts) and all(scripts[part.TASK](c) for t in texts for c in t if c != " ")
        assert all(" " not in t for t in texts) if part.TASK == "ood_zh" else all(" " in t for t in texts)
        assert m.labels == sorted({c for u in train for c in u.text if c != " "})  # the training inventory
        assert {c for u in dev + test for c in u.text if c != " "} <= set(m.labels)
        speakers = {s: {u.speaker for u in m.splits[s]} for s in m.splits}
        assert not speakers["train"] & speakers["test"] and not speakers["dev"] & speakers["test"]
        assert m.extra["voice"] == part.VOICE
        (step,) = {p.ORDER for p in (part,)}
        assert step > max(p.ORDER for p in demo.demo_parts() if p.TASK not in SG_PART2_TASKS + LATER_PARTS)


def test_translation_part_pairs_english_speech_with_its_german_translation(tiny):
    from recipes.prepare import demo_st

    out, _ = tiny
    m = load_task_manifest(out / "st")
    assert m.label_field == "translation"
    assert demo_st.ORDER > max(p.ORDER for p in demo.demo_parts()  # drawn after every part before it
                               if p is not demo_st and p.TASK not in LATER_PARTS)
    assert tuple(len(m.splits[s]) for s in ("train", "dev", "test")) == demo_st.SIZES["tiny"][0]
    rows = m.utterances()
    english = [u.targets["transcript"] for u in rows]
    assert len(set(english)) == len(english)
    for u in rows:
        german = u.targets["translation"]
        assert isinstance(german, str) and german.strip() and german[0].isupper() and german.endswith(".")
        parsed = demo_st.parse(u.targets["transcript"])  # the English side, read back into template and lexicon
        assert parsed is not None, u.targets["transcript"]
        assert demo_st.render(*parsed) == (u.targets["transcript"], german)  # the same template pair
    train_words = {w for u in m.splits["train"] for w in u.targets["translation"].rstrip(".").split()}
    assert all(set(u.targets["translation"].rstrip(".").split()) <= train_words
               for u in m.splits["dev"] + m.splits["test"])
    speakers = {s: {u.speaker for u in m.splits[s]} for s in m.splits}
    assert not speakers["train"] & speakers["test"] and not speakers["dev"] & speakers["test"]
    assert not speakers["train"] & speakers["dev"]


def test_translation_grammar_pairs_each_template_with_a_correct_german_sentence():
    from recipes.prepare import demo_st

    counts = demo_st.count_pairs()
    assert sum(counts.values()) == 796284 and len(counts) == len(demo_st.TEMPLATES)
    nouns = {n[0]: i for i, n in enumerate(demo_st.NOUNS)}
    adjectives = {a[0]: i for i, a in enumerate(demo_st.ADJECTIVES)}
    verbs = {v[0]: i for i, v in enumerate(demo_st.VERBS)}
    cases = {  # gender, case and number: article, adjective ending, verb second after an adverb
        ("the old dog sees the cat", 0): "Der alte Hund sieht die Katze.",
        ("the small cat likes the man", 0): "Die kleine Katze mag den Mann.",
        ("the new car finds the house", 0): "Das neue Auto findet das Haus.",
        ("the tree is green", 2): "Der Baum ist grün.",
    }
    for (english, t), german in cases.items():
        words = english.split()
        slots = ({"noun": nouns[words[1]], "adj": adjectives[words[3]]} if t == 2 else
                 {"adj": adjectives[words[1]], "noun": nouns[words[2]], "verb": verbs[words[3]],
                  "noun2": nouns[words[5]]})
        assert demo_st.render(t, slots) == (english[0].upper() + english[1:] + ".", german)
    assert demo_st.render(1, {"num": 1, "adj": 0, "noun": 0, "verb": 0, "noun2": 0}) == \
        ("Three old dogs see the dog.", "Drei alte Hunde sehen den Hund.")
    assert demo_st.render(3, {"noun": 4, "verb": 12, "num": 0, "noun2": 14}) == \
        ("The woman likes two apples.", "Die Frau mag zwei Äpfel.")
    assert demo_st.render(4, {"adv": 0, "adj": 0, "noun": 0, "verb": 0, "noun2": 3}) == \
        ("Today the old dog sees the man.", "Heute sieht der alte Hund den Mann.")
    assert demo_st.parse("The dog sees the dog.") is None  # not a template: no adjective


@pytest.mark.parametrize("size", ["tiny", "default", "large"])
def test_voice_conversion_part_reads_unseen_test_sentences_with_every_voice(size):
    from recipes.prepare import demo_vc

    plan = demo._Plan(demo.SIZES[size], demo.Jitter(), np.random.default_rng(0), size)
    items = plan.vc_items
    n_targets, (n_train, n_dev), n_sources, n_test = demo_vc.SIZES[size]
    assert len(items["targets"]) == n_targets and len(items["sources"]) == n_sources
    trained = {j["text"] for e in items["targets"] for j in e["train"] + e["dev"]}
    assert all(len(e["train"]) == n_train and len(e["dev"]) == n_dev for e in items["targets"])
    assert len(trained) == n_targets * (n_train + n_dev)  # no sentence twice
    assert len(set(items["sentences"])) == n_test and not set(items["sentences"]) & trained
    voices = [e["speaker"] for e in items["targets"]] + items["sources"]
    assert {v: [j["text"] for j in items["readings"][v]] for v in voices} == {v: items["sentences"] for v in voices}
