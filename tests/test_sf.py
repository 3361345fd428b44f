"""SF (slot filling): the markup parser and CTC tokens, s3prl's slot-type F1 and slot-value CER against
hand-computed values, the manifest check, the Audio SNIPS preparer on a fake layout, the demo plan's
token guarantee, and a short run whose record carries both metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from downstreams.slot_filling import (
    SlotMarkupError,
    SlotVocab,
    markup_tokens,
    parse_slots,
    render,
    slot_type_f1,
    slot_value_cer,
)
from recipes.prepare import PrepareError
from recipes.prepare.snips import iob_to_markup, prepare_snips
from superbench.manifest import ManifestError, load_task_manifest, write_task_manifest
from superbench.records import artifact_paths, record_path
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import SR, TONES, ToneUpstream, _tone, scratch_run_options

# ----------------------------------------------------------------------------------------- markup and tokens


def test_markup_tokens_are_s3prl_character_slot_tokens_and_decode_back():
    markup = "PLAY B-artist THE BEATLES E-artist ON B-service SPOTIFY E-service"
    tokens = markup_tokens(markup)
    # s3prl CharacterTextSlotEncoder: B- before the slot's first word (after the separator), E- right after
    # its last word (before the separator); "|" stands for s3prl's space token
    assert tokens == (list("PLAY") + ["|", "B-artist"] + list("THE") + ["|"] + list("BEATLES")
                      + ["E-artist", "|"] + list("ON") + ["|", "B-service"] + list("SPOTIFY") + ["E-service"])
    assert render(tokens) == markup
    assert parse_slots(markup)[0].name == "artist" and parse_slots(markup)[0].value == "THE BEATLES"
    # adjacent slots: "E-a | B-b"
    assert markup_tokens("B-a X E-a B-b Y E-b") == ["B-a", "X", "E-a", "|", "B-b", "Y", "E-b"]
    vocab = SlotVocab(list("ABEFHILNOPSTY") + ["B-artist", "E-artist", "B-service", "E-service"])
    assert vocab.decode(vocab.encode(markup)) == markup
    # a decoded hypothesis is rendered like s3prl's decode: "E-x" glued to the characters after it
    assert render(["B-a", "E-b", "F", "O", "O", "E-a"]) == "B-a E-bFOO E-a"


@pytest.mark.parametrize("markup, message", [
    ("PLAY B-artist ADELE", "slot 'artist' is never closed"),
    ("PLAY ADELE E-artist", "'E-artist' .token 3. closes a slot that was never opened"),
    ("B-artist ADELE E-album", "'E-album' .token 3. closes slot 'artist': mismatched tags"),
    ("B-a X B-b Y E-b E-a", "'B-b' .token 3. opens a slot inside the open slot 'a'"),
    ("PLAY B-artist E-artist", "slot 'artist' .ending at token 3. has an empty value"),
    ("PLAY B- X", "'B-' .token 2. is a slot tag without a slot name"),
])
def test_parser_refuses_bad_markup(markup, message):
    with pytest.raises(SlotMarkupError, match=message):
        parse_slots(markup)


# ----------------------------------------------------------------------------------------- metrics

REFS = ["PLAY B-artist ADELE E-artist ON B-service SPOTIFY E-service",
        "WHAT TIME IS IT",
        "BOOK B-city PARIS E-city",
        "B-city ROME E-city"]
HYPS = ["PLAY B-artist ADEL E-artist ON SPOTIFY",  # artist found (one letter short), service lost
        "WHAT TIME IS IT",  # no slot on either side
        "BOOK B-time PARIS E-time",  # right value, wrong type
        ""]  # nothing decoded


def test_slot_type_f1_is_the_mean_of_per_utterance_f1_over_slot_type_sets():
    # 1: ref {artist, service}, hyp {artist}: P = 1/1, R = 1/2, F1 = 2 * 1 * 0.5 / 1.5 = 2/3
    # 2: no slot on either side: 1
    # 3: ref {city}, hyp {time}: P = R = 0: 0
    # 4: ref {city}, hyp none: 0
    # mean = (2/3 + 1 + 0 + 0) / 4 = 5/12 = 41.667 %
    assert slot_type_f1(REFS, HYPS) == pytest.approx(100 * 5 / 12)
    assert slot_type_f1(REFS, REFS) == pytest.approx(100.0)
    # a type is counted once however often it occurs: ref {city}, hyp {city} -> 1
    assert slot_type_f1(["B-city A E-city B-city B E-city"], ["B-city A E-city"]) == pytest.approx(100.0)


def test_slot_value_cer_is_corpus_level_over_reference_values():
    # ADELE vs ADEL: 1 edit / 5; SPOTIFY, no service in hyp: 7 / 7; PARIS, no city in hyp: 5 / 5;
    # ROME, nothing: 4 / 4 -> (1 + 7 + 5 + 4) / (5 + 7 + 5 + 4) = 17 / 21 = 80.952 %
    assert slot_value_cer(REFS, HYPS) == pytest.approx(100 * 17 / 21)
    assert slot_value_cer(REFS, REFS) == pytest.approx(0.0)


def test_slot_value_cer_takes_the_best_hypothesis_value_of_the_same_type():
    # PARIS: candidates ROME (CER >= 3/5) and PARIX (1/5) -> PARIX, 1 edit; ROME: ROME, 0 edits
    # -> 1 / (5 + 4) = 11.111 %; "THE MOON" (a space counts): "THE MON", 1 / 8
    assert slot_value_cer(["B-city PARIS E-city AND B-city ROME E-city"],
                          ["B-city ROME E-city B-city PARIX E-city"]) == pytest.approx(100 / 9)
    assert slot_value_cer(["B-x THE MOON E-x"], ["B-x THE MON E-x"]) == pytest.approx(100 / 8)


def test_hypothesis_values_are_cleaned_of_stray_tags_as_in_s3prl():
    # the regex takes "THE B-x BEATLES" as the artist value; clean() drops "B-x " -> "THE BEATLES", 0 edits,
    # and the unclosed B-x is no slot type
    ref, hyp = ["B-artist THE BEATLES E-artist"], ["B-artist THE B-x BEATLES E-artist"]
    assert slot_value_cer(ref, hyp) == pytest.approx(0.0)
    assert slot_type_f1(ref, hyp) == pytest.approx(100.0)
    # a slot closed by another type's tag is no slot: the artist value runs to the matching E-artist
    assert slot_value_cer(["B-a X Y E-a"], ["B-a X E-b Y E-a"]) == pytest.approx(0.0)


def test_slot_value_cer_refuses_references_without_slots():
    with pytest.raises(ValueError, match="references hold no slot"):
        slot_value_cer(["WHAT TIME IS IT"], ["WHAT TIME IS IT"])


def test_objective_reports_f1_and_the_secondary_cer():
    from downstreams.slot_filling import SlotFillingObjective

    objective = SlotFillingObjective(SlotVocab(list("ABDEFHILMNOPRSTWY") + ["B-artist", "E-artist"]))
    assert objective.metric == "f1" and objective.higher_is_better
    assert objective.score(REFS, HYPS) == pytest.approx(100 * 5 / 12)
    assert objective.secondary_scores(REFS, HYPS) == {"cer": pytest.approx(100 * 17 / 21)}
    task = get_task("sf")
    assert [m.name for m in task.secondary_metrics] == ["cer"] and not task.secondary_metrics[0].higher_is_better


# ----------------------------------------------------------------------------------------- manifest check

def _tone_rows(root, markups_by_split):
    """Rows of tone audio (one tone per letter of the words, so the task is learnable) for each markup."""
    rng = np.random.default_rng(0)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    splits = {}
    for split, markups in markups_by_split.items():
        rows = []
        for k, markup in enumerate(markups):
            letters = [c for tok in markup.split() if tok[:2] not in ("B-", "E-") for c in tok]
            wav = np.concatenate([_tone(TONES["ABCD".index(c)], 0.12, rng) for c in letters]).astype(np.float32)
            rel = f"wav/{split}_{k}.wav"
            sf.write(root / rel, wav, SR)
            rows.append({"id": f"{split}-{k}", "audio": rel, "sample_rate": SR, "num_samples": wav.size,
                         "speaker": "s", "slots": markup})
        splits[split] = rows
    return splits


def _write(root, splits, labels=tuple("ABCD") + ("B-x", "E-x")):
    write_task_manifest(root, task="sf", corpus="tones", version="1", label_field="slots", labels=list(labels),
                        splits=splits)
    return load_task_manifest(root)


def test_check_refuses_bad_markup_and_tokens_outside_the_inventory(tmp_path):
    good = {"train": ["A B-x B E-x"], "dev": ["B-x C E-x"], "test": ["D B-x A E-x"]}
    get_task("sf").check_manifest(_write(tmp_path / "ok", _tone_rows(tmp_path / "ok", good)))
    bad = dict(good, dev=["B-x C E-x", "A B-x C"])
    manifest = _write(tmp_path / "bad", _tone_rows(tmp_path / "bad", bad))
    with pytest.raises(ManifestError, match="dev.jsonl id='dev-1': slot 'x' is never closed"):
        get_task("sf").check_manifest(manifest)
    unknown = dict(good, test=["D B-y A E-y"])
    manifest = _write(tmp_path / "tok", _tone_rows(tmp_path / "tok", unknown))
    with pytest.raises(ManifestError, match="test.jsonl id='test-0': \\['B-y', 'E-y'\\]"):
        get_task("sf").check_manifest(manifest)
    manifest = _write(tmp_path / "inv", _tone_rows(tmp_path / "inv", good), labels=list("ABCD") + ["B-x", "E-x", "AB"])
    with pytest.raises(ManifestError, match="single characters or B-<slot>/E-<slot> tokens.*'AB'"):
        get_task("sf").check_manifest(manifest)
    noslot = dict(good, test=["D A"])
    manifest = _write(tmp_path / "nos", _tone_rows(tmp_path / "nos", noslot))
    with pytest.raises(ManifestError, match="test.jsonl: no utterance has a slot"):
        get_task("sf").check_manifest(manifest)


# ----------------------------------------------------------------------------------------- preparer

def _snips_layout(root, lines, wavs):
    root.mkdir(parents=True, exist_ok=True)
    (root / "all.iob.snips.txt").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    for split, uid in wavs:
        (root / split).mkdir(parents=True, exist_ok=True)
        sf.write(root / split / f"{uid}.wav", np.zeros(1600, dtype=np.float32), 16000)


GOOD_LINES = [
    "Ivy-snips-train-0 BOS PLAY THE BEATLES ON SPOTIFY EOS\tO O artist artist O service PlayMusic",
    "Aditi-snips-train-0 BOS PLAY ADELE EOS\tO O artist PlayMusic",  # a dev speaker's training file: left out
    "Aditi-snips-valid-3 BOS WILL IT RAIN IN PARIS & ROME , TONIGHT EOS\tO O O O O city city city O timeRange "
    "GetWeather",
    "Brian-snips-test-7 BOS WHAT TIME IS IT EOS\tO O O O O GetWeather",
]
GOOD_WAVS = [("train", "Ivy-snips-train-0"), ("train", "Aditi-snips-train-0"), ("valid", "Aditi-snips-valid-3"),
             ("test", "Brian-snips-test-7"), ("test", "Emma-snips-test-9")]  # the last has no transcript line


def test_iob_to_markup_follows_s3prls_encoder():
    # runs of one slot name are one slot; "&" -> AND; "," dropped (its label too); the run continues across it
    assert iob_to_markup("PARIS & ROME , TONIGHT".split(), "city city city O timeRange".split()) == \
        "B-city PARIS AND ROME E-city B-timeRange TONIGHT E-timeRange"


def test_prepare_snips_writes_the_sf_manifest(tmp_path):
    _snips_layout(tmp_path / "SNIPS", GOOD_LINES, GOOD_WAVS)
    folder = prepare_snips(tmp_path / "SNIPS", tmp_path / "out")
    assert folder == tmp_path / "out" / "sf"
    manifest = load_task_manifest(folder)
    assert [u.id for u in manifest.splits["train"]] == ["Ivy-snips-train-0"]
    assert manifest.splits["train"][0].targets["slots"] == "PLAY B-artist THE BEATLES E-artist ON B-service SPOTIFY " \
                                                           "E-service"
    assert manifest.splits["dev"][0].targets["slots"] == "WILL IT RAIN IN B-city PARIS AND ROME E-city " \
                                                         "B-timeRange TONIGHT E-timeRange"
    assert manifest.splits["dev"][0].speaker == "Aditi" and manifest.splits["test"][0].id == "Brian-snips-test-7"
    assert "B-timeRange" in manifest.labels and "D" in manifest.labels and "|" not in manifest.labels
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["extra"]["dropped"]["utterances of speakers outside s3prl's train speaker list"]["count"] == 1
    assert meta["extra"]["dropped"]["wav files without a line in all.iob.snips.txt"]["count"] == 1


def test_prepare_snips_names_file_and_line_of_a_malformed_annotation(tmp_path):
    lines = GOOD_LINES + ["Ivy-snips-train-1 BOS PLAY MADONNA EOS\tO O artist artist PlayMusic",
                          "Ivy-snips-train-2 BOS PLAY MADONNA EOS O O artist PlayMusic"]
    _snips_layout(tmp_path / "SNIPS", lines, GOOD_WAVS + [("train", "Ivy-snips-train-1")])
    path = tmp_path / "SNIPS" / "all.iob.snips.txt"
    with pytest.raises(PrepareError) as err:
        prepare_snips(tmp_path / "SNIPS", tmp_path / "out")
    assert f"{path}:5: 2 word(s) but 3 slot label(s)" in str(err.value)
    assert f"{path}:6: expected one tab between the words and the slot labels, found 0" in str(err.value)
    assert not (tmp_path / "out" / "sf" / "meta.json").exists()
    folder = prepare_snips(tmp_path / "SNIPS", tmp_path / "out", skip_bad=True)  # those lines left out
    assert [u.id for u in load_task_manifest(folder).splits["train"]] == ["Ivy-snips-train-0"]


# ----------------------------------------------------------------------------------------- demo plan

def test_demo_plan_keeps_dev_and_test_tokens_inside_train():
    from recipes.prepare import demo_sf

    class Plan:  # what demo_sf.plan uses of the demo's _Plan
        size, rng, rows, jobs = "tiny", np.random.default_rng(0), {}, []

        def _speakers(self, n, prefix):
            return [type("S", (), {"id": f"{prefix}{len(self.jobs)}-{i}"})() for i in range(n)]

        def _job(self, uid, folder, text, spk):
            self.jobs.append({"id": uid, "path": f"audio/{folder}/{uid}.wav", "text": text})
            return self.jobs[-1]

        def _row(self, task, split, job, spk, **labels):
            self.rows.setdefault(task, {}).setdefault(split, []).append({"id": job["id"], "speaker": spk.id,
                                                                         **labels})

    p = Plan()
    demo_sf.plan(p)
    rows = p.rows["sf"]
    assert [len(rows[s]) for s in ("train", "dev", "test")] == list(demo_sf.SIZES["tiny"][1])
    train = set(demo_sf.inventory({"train": rows["train"]}))
    assert set(demo_sf.inventory(rows)) == train and {"B-artist", "E-party_size"} <= train
    for split_rows in rows.values():
        for r in split_rows:
            assert parse_slots(r["slots"])  # every query has at least one slot
    speakers = {s: {r["speaker"] for r in rows[s]} for s in rows}
    assert not (speakers["train"] & speakers["dev"]) and not (speakers["train"] & speakers["test"])
    job = next(j for j in p.jobs if j["id"] == rows["train"][0]["id"])
    assert job["text"].upper() == " ".join(w for w in rows["train"][0]["slots"].split() if w[:2] not in ("B-", "E-"))


# ----------------------------------------------------------------------------------------- end to end

def test_short_run_records_f1_and_slot_value_cer(tmp_path):
    rng = np.random.default_rng(1)

    def markups(n):
        out = []
        for _ in range(n):
            words = ["".join("ABCD"[i] for i in rng.integers(0, 4, size=2)) for _ in range(3)]
            k = int(rng.integers(0, 3))
            words[k] = f"B-x {words[k]} E-x"
            out.append(" ".join(words))
        return out

    root = tmp_path / "data" / "sf"
    _write(root, _tone_rows(root, {"train": markups(16), "dev": markups(4), "test": markups(4)}))
    overrides = {"steps": 20, "eval_interval": 10, "batch_size": 4, "lr_grid": [1e-2]}
    (rec,) = run(ToneUpstream(), [get_task("sf")], tmp_path / "data",
                      scratch_run_options(tmp_path / "run", overrides=overrides))
    assert rec.metric == "f1" and 0.0 <= rec.test <= 100.0
    assert set(rec.secondary) == {"cer"} and set(rec.secondary["cer"]) == {"dev", "test"}
    # both numbers come from the selected head's decoded predictions, kept beside the record
    path = record_path(tmp_path / "run" / "results", rec.run_key())
    rows = [json.loads(line) for line in artifact_paths(rec, path)["predictions"].read_text().splitlines()]
    for split, f1 in (("dev", rec.dev), ("test", rec.test)):
        refs = [r["reference"] for r in rows if r["split"] == split]
        hyps = [r["prediction"] for r in rows if r["split"] == split]
        assert refs and slot_type_f1(refs, hyps) == pytest.approx(f1, abs=1e-3)
        assert slot_value_cer(refs, hyps) == pytest.approx(rec.secondary["cer"][split], abs=1e-3)


def test_tiny_demo_sf_manifest_passes_the_task_check():
    # the session's tiny demo (generated once, shared with test_demo_corpus)
    from recipes.prepare import demo

    manifest = load_task_manifest(demo.ensure_demo("tiny") / "sf")
    get_task("sf").check_manifest(manifest)
    chars = [t for t in manifest.labels if len(t) == 1]
    assert manifest.labels == chars + sorted(set(manifest.labels) - set(chars)) and "B-city" in manifest.labels
    speakers = {s: {u.speaker for u in rows} for s, rows in manifest.splits.items()}
    assert not speakers["train"] & speakers["dev"] and not speakers["train"] & speakers["test"]
