"""IC (Fluent Speech Commands intents): the objective, the manifest checks, the preparer, the demo part, a run."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from downstreams.intent import IntentObjective, StackedIntentHeads, slot_inventories
from downstreams.utterance import UtteranceHead
from recipes.prepare import PrepareError
from recipes.prepare.fluent_commands import prepare_fluent_commands
from superbench.manifest import ManifestError, load_task_manifest, write_task_manifest
from superbench.records import read_record, record_path
from superbench.runner import run
from superbench.tasks import get_task
from superbench.testing import SR, TONES, ToneUpstream, scratch_run_options

# inventories: action [a, b], object [x, y], location [k, n] -> logits [a b | x y | k n]
INTENTS = ["a|x|n", "a|y|n", "b|x|k"]


def test_slot_inventories_are_sorted_per_slot():
    assert slot_inventories(INTENTS) == {"action": ["a", "b"], "object": ["x", "y"], "location": ["k", "n"]}
    with pytest.raises(ValueError, match="not 3 '\\|'-joined"):
        slot_inventories(["a|x"])


def test_accuracy_needs_all_three_slots_right():
    obj = IntentObjective(INTENTS)
    assert obj.sizes == [2, 2, 2] and obj.table.tolist() == [[0, 0, 1], [0, 1, 1], [1, 0, 0]]
    logits = torch.tensor([
        [5.0, 0.0, 5.0, 0.0, 0.0, 5.0],  # a x n: intent 0, right
        [5.0, 0.0, 5.0, 0.0, 0.0, 5.0],  # a x n, target a y n: object wrong
        [0.0, 5.0, 5.0, 0.0, 5.0, 0.0],  # b x k: intent 2, right
        [0.0, 5.0, 0.0, 5.0, 0.0, 5.0],  # b y n: no such intent, target b x k
    ])
    predictions = obj.predict(logits, torch.ones(4))
    assert predictions == [0, 0, 2, "b|y|n"]
    assert obj.score([0, 1, 2, 2], predictions) == pytest.approx(50.0)  # 2 of 4 all right


def test_loss_is_the_sum_of_the_slot_cross_entropies():
    obj = IntentObjective(INTENTS)
    logits = torch.tensor([[1.0, 0.0, 2.0, 0.0, 0.0, 3.0],
                           [0.0, 1.0, 0.0, 0.0, 1.0, 1.0]])
    targets = [1, 2]  # a|y|n -> slots (0, 1, 1); b|x|k -> slots (1, 0, 0)

    def ce(pair, k):
        return -(pair[k] - math.log(math.exp(pair[0]) + math.exp(pair[1])))

    rows = logits.tolist()
    by_hand = sum((ce(rows[0][2 * s:2 * s + 2], t0) + ce(rows[1][2 * s:2 * s + 2], t1)) / 2
                  for s, (t0, t1) in enumerate(zip((0, 1, 1), (1, 0, 0))))
    # slot by slot: action (1,0)->0 and (0,1)->1; object (2,0)->1 and (0,0)->0; location (0,3)->1 and (1,1)->0
    assert by_hand == pytest.approx(((math.log(1 + math.e) - 1) * 2 + (math.log(1 + math.e ** 2)) + math.log(2)
                                     + (math.log(1 + math.e ** 3) - 3) + math.log(2)) / 2)
    assert obj.loss(logits, torch.ones(2), targets).item() == pytest.approx(by_hand, rel=1e-6)


def test_stacked_heads_match_autograd_on_the_ic_loss():
    obj = IntentObjective(INTENTS)
    torch.manual_seed(0)
    heads = [UtteranceHead(3, 8, obj.num_outputs, proj_dim=5) for _ in range(2)]
    with torch.no_grad():
        heads[1].featurizer.weights.copy_(torch.tensor([0.3, -0.2, 0.5]))
    x = torch.randn(3, 6, 8)  # (L, B, D), the same rows for both trials
    targets = torch.tensor([[0, 1, 2, 2, 1, 0], [2, 2, 0, 1, 0, 1]])
    loss, grads = StackedIntentHeads(heads, obj).loss_and_grads(x, targets)
    for k, head in enumerate(heads):
        head.zero_grad()
        expected = obj.loss(head(x), torch.ones(6), targets[k].tolist())
        expected.backward()
        assert loss[k].item() == pytest.approx(expected.item(), rel=1e-5)
        autograd = [head.featurizer.weights.grad, head.projector.weight.grad, head.projector.bias.grad,
                    head.classifier.weight.grad, head.classifier.bias.grad]
        for mine, ref in zip(grads, autograd):
            torch.testing.assert_close(mine[k], ref, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- manifest checks

def _row(uid, intent, **slots):
    return {"id": uid, "audio": f"/nowhere/{uid}.wav", "sample_rate": SR, "num_samples": SR, "speaker": "s",
            "intent": intent, **slots}


def _manifest(tmp_path, splits, labels=None, allow_unseen=False, extra=None):
    labels = labels if labels is not None else sorted({r["intent"] for rows in splits.values() for r in rows})
    write_task_manifest(tmp_path / "ic", task="ic", corpus="t", version="1", label_field="intent", labels=labels,
                        splits=splits, allow_unseen_labels=allow_unseen, extra=extra)
    return load_task_manifest(tmp_path / "ic", check_files=False)


GOOD = {"train": [_row("t1", "a|x|n", action="a", object="x", location="n"), _row("t2", "b|y|k")],
        "dev": [_row("d1", "a|x|n")], "test": [_row("e1", "b|y|k")]}


def test_a_consistent_manifest_passes_the_check(tmp_path):
    get_task("ic").check_manifest(_manifest(tmp_path, GOOD, extra={"slots": {"action": ["b", "a"],
                                  "object": ["x", "y"], "location": ["k", "n"]}}))


def test_an_intent_that_is_not_three_slots_is_refused(tmp_path):
    splits = {**GOOD, "dev": [_row("d1", "a|x")]}
    with pytest.raises(ManifestError, match=r"dev.jsonl id='d1': intent 'a\|x' is not 3 '\|'-joined values"):
        get_task("ic").check_manifest(_manifest(tmp_path, splits, labels=["a|x|n", "b|y|k"]))


def test_slot_fields_that_disagree_with_the_intent_are_refused(tmp_path):
    splits = {**GOOD, "train": GOOD["train"] + [_row("t3", "a|x|n", action="b")]}
    with pytest.raises(ManifestError, match=r"train.jsonl id='t3': slot field\(s\) disagree .*action 'b' vs 'a'"):
        get_task("ic").check_manifest(_manifest(tmp_path, splits))


def test_malformed_labels_in_meta_are_refused(tmp_path):
    with pytest.raises(ManifestError, match=r"meta.json: 1 label\(s\) are not 3 .*\['a\|x\|n\|z'\]"):
        get_task("ic").check_manifest(_manifest(tmp_path, GOOD, labels=["a|x|n", "b|y|k", "a|x|n|z"]))
    with pytest.raises(ManifestError, match="extra.slots .* does not list the slot values"):
        get_task("ic").check_manifest(_manifest(tmp_path, GOOD, extra={"slots": {"action": ["a"]}}))


def test_a_slot_value_only_in_test_is_refused(tmp_path):
    splits = {**GOOD, "test": [_row("e1", "b|y|k"), _row("e2", "a|z|n")]}
    m = _manifest(tmp_path, splits, allow_unseen=True)  # even with the opt-out: no output for 'z'
    with pytest.raises(ManifestError, match=r"test.jsonl id='e2': object 'z' never in train.jsonl"):
        get_task("ic").check_manifest(m)


def test_an_intent_only_in_dev_is_refused_unless_the_manifest_opts_out(tmp_path):
    splits = {**GOOD, "dev": [_row("d1", "a|y|k")]}  # every slot value seen in train, the combination not
    with pytest.raises(ManifestError, match="never in train.jsonl"):
        _manifest(tmp_path, splits)  # the manifest's own rule, at write
    m = _manifest(tmp_path, splits, allow_unseen=True)
    get_task("ic").check_manifest(m)  # opted out: per-slot outputs can still predict it
    with pytest.raises(ManifestError, match=r"dev.jsonl id='d1': intent 'a\|y\|k' never in train.jsonl"):
        get_task("ic").check_manifest(dataclasses.replace(m, allow_unseen_labels=False))


# ----------------------------------------------------------------------------- preparer (fake FSC layout)

ACTIONS, OBJECTS, LOCATIONS = ("activate", "deactivate"), ("lights", "lamp"), ("none", "kitchen")
FSC_INTENTS = [("activate", "lights", "none"), ("deactivate", "lights", "none"), ("activate", "lamp", "kitchen"),
               ("deactivate", "lamp", "none"), ("activate", "lights", "kitchen"), ("deactivate", "lamp", "kitchen")]
HEADER = ",path,speakerId,transcription,action,object,location\n"  # FSC's files start with an unnamed index


def _chord(values, rng):
    """A 0.4-0.7 s chord: one tone per slot value, so a tone upstream can learn the intent."""
    n = int(rng.uniform(0.4, 0.7) * SR)
    t = np.arange(n) / SR
    freqs = [TONES[ACTIONS.index(values[0])], TONES[2 + OBJECTS.index(values[1])],
             TONES[4 + LOCATIONS.index(values[2])]]
    wav = sum(0.2 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) for f in freqs)
    return (wav + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _fake_fsc(root, per_intent=(4, 2, 2), seed=0, intents=FSC_INTENTS):
    rng = np.random.default_rng(seed)
    for (split, name), n in zip((("train", "train"), ("dev", "valid"), ("test", "test")), per_intent):
        lines = [HEADER]
        for i, values in enumerate(intents):
            for k in range(n):
                spk = f"{split}Spk{k % 2}"
                rel = f"wavs/speakers/{spk}/{split}-{i}-{k}.wav"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / rel, _chord(values, rng), SR)
                lines.append(f"{len(lines) - 1},{rel},{spk},\"say {values[0]}, {values[1]}\","
                             f"{values[0]},{values[1]},{values[2]}\n")
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "data" / f"{name}_data.csv").write_text("".join(lines))
    return root


def test_preparer_writes_the_ic_manifest(tmp_path):
    folder = prepare_fluent_commands(_fake_fsc(tmp_path / "fsc"), tmp_path / "out")
    assert folder == tmp_path / "out" / "ic"
    m = load_task_manifest(folder)
    assert m.label_field == "intent" and m.labels == sorted("|".join(v) for v in FSC_INTENTS)
    assert {s: len(r) for s, r in m.splits.items()} == {"train": 24, "dev": 12, "test": 12}
    assert m.extra["slots"] == {"action": ["activate", "deactivate"], "object": ["lamp", "lights"],
                                "location": ["kitchen", "none"]}
    first = m.splits["train"][0]
    assert first.id == "trainSpk0-train-0-0" and first.speaker == "trainSpk0"
    assert first.targets == {"intent": "activate|lights|none", "action": "activate", "object": "lights",
                             "location": "none", "transcription": "say activate, lights"}  # quoted comma kept
    get_task("ic").check_manifest(m)


def test_preparer_names_the_malformed_csv_line(tmp_path):
    root = _fake_fsc(tmp_path / "fsc")
    csv_path = root / "data" / "valid_data.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    lines[2] = "1,wavs/speakers/devSpk1/dev-0-1.wav,devSpk1,activate,lights\n"  # two fields short
    csv_path.write_text("".join(lines))
    with pytest.raises(PrepareError, match=r"valid_data.csv:3: expected 7 fields .* got 5"):
        prepare_fluent_commands(root, tmp_path / "out")
    assert not (tmp_path / "out" / "ic").exists()  # nothing written
    folder = prepare_fluent_commands(root, tmp_path / "out", skip_bad=True)
    assert len(load_task_manifest(folder).splits["dev"]) == 11


def test_preparer_refuses_slot_values_and_intents_unseen_in_train(tmp_path):
    root = _fake_fsc(tmp_path / "fsc")
    test_csv = root / "data" / "test_data.csv"
    lines = test_csv.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(",activate,lights,none", ",activate,lights,bedroom")
    lines[3] = lines[3].replace(",deactivate,lights,none", ",deactivate,lights,kitchen")  # values seen, intent not
    test_csv.write_text("".join(lines))
    with pytest.raises(PrepareError) as err:
        prepare_fluent_commands(root, tmp_path / "out")
    text = str(err.value)
    assert "test_data.csv:2: location 'bedroom' never in train_data.csv" in text
    assert "test_data.csv:4: intent 'deactivate|lights|kitchen' never in train_data.csv" in text


def test_preparer_names_a_missing_wav_and_a_missing_column(tmp_path):
    root = _fake_fsc(tmp_path / "fsc")
    (root / "wavs/speakers/trainSpk1/train-2-1.wav").unlink()
    with pytest.raises(PrepareError, match=r"train_data.csv:\d+: names a missing file .*train-2-1.wav"):
        prepare_fluent_commands(root, tmp_path / "out")
    (root / "data" / "test_data.csv").write_text("path,speakerId,action,object\n")
    with pytest.raises(PrepareError, match=r"test_data.csv:1: header lacks column\(s\) location"):
        prepare_fluent_commands(root, tmp_path / "out")


# ----------------------------------------------------------------------------- end to end

def test_ic_runs_end_to_end_on_a_prepared_corpus(tmp_path):
    prepare_fluent_commands(_fake_fsc(tmp_path / "fsc", per_intent=(8, 2, 2)), tmp_path / "data")
    overrides = {"steps": 120, "eval_interval": 40, "batch_size": 8, "lr_grid": [1e-2]}
    (rec,) = run(ToneUpstream(), [get_task("ic")], tmp_path / "data",
                      scratch_run_options(tmp_path, overrides=overrides))
    assert rec.metric == "acc" and rec.test >= 75.0  # chance: 1/6 intents
    on_disk = read_record(record_path(tmp_path / "results", rec.run_key()))
    assert on_disk.test == rec.test
    rows = [json.loads(line) for line in (record_path(tmp_path / "results", rec.run_key()).parent
                                          / rec.artifacts["predictions"]).read_text().splitlines()]
    assert len(rows) == 24 and {r["split"] for r in rows} == {"dev", "test"}
    assert all(r["reference"] in {"|".join(v) for v in FSC_INTENTS} for r in rows)  # intent names, not indices
    test_rows = [r for r in rows if r["split"] == "test"]
    assert 100 * sum(r["reference"] == r["prediction"] for r in test_rows) / len(test_rows) == pytest.approx(rec.test)


def test_grouped_trials_train_like_one_at_a_time(tmp_path):
    prepare_fluent_commands(_fake_fsc(tmp_path / "fsc"), tmp_path / "data")
    overrides = {"steps": 30, "eval_interval": 15, "batch_size": 8, "lr_grid": [1e-3, 1e-2]}
    scores = []
    for grouped in (True, False):
        opts = scratch_run_options(tmp_path / str(grouped), overrides=overrides, group_trials=grouped)
        (rec,) = run(ToneUpstream(), [get_task("ic")], tmp_path / "data", opts)
        scores.append([(t["lr"], t["dev"], t["test"], t["history"]) for t in rec.trials])
    assert scores[0] == scores[1]  # accuracies of 12 utterances: float-order noise does not flip them here


# ----------------------------------------------------------------------------- demo part

def test_demo_part_has_held_out_speakers_and_every_intent_in_train(tmp_path_factory):
    from recipes.prepare import demo, demo_ic

    with pytest.MonkeyPatch.context() as mp:  # the session's shared tiny corpus (see test_demo_corpus.py)
        mp.setenv("SUPERBENCH_HOME", str(tmp_path_factory.getbasetemp() / "superbench-home"))
        out = demo.ensure_demo("tiny")
    m = load_task_manifest(out / "ic")
    get_task("ic").check_manifest(m)
    n_intents, _, per_intent = demo_ic.SIZES["tiny"]
    assert len(m.labels) == n_intents and {s: len(r) for s, r in m.splits.items()} == {
        s: n_intents * n for s, n in zip(("train", "dev", "test"), per_intent)}
    for split in ("train", "dev", "test"):
        assert {u.intent for u in m.splits[split]} == set(m.labels)
    spk = {s: {u.speaker for u in m.splits[s]} for s in m.splits}
    assert not spk["train"] & spk["dev"] and not spk["train"] & spk["test"] and not spk["dev"] & spk["test"]
    phrasings = dict(("|".join(v), p) for v, p in demo_ic.INTENTS)
    assert all(u.transcription in phrasings[u.intent] for u in m.utterances())
