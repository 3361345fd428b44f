"""SUPERB-SG out-of-domain ASR (built-ins `recipes/ood_*.py`, group `ood_asr`): the task declarations, their
recipes, CER, the training-transcript character inventory and s3prl's RNN projection on the CTC head."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import recipes
from downstreams.ctc import CTCHead, CTCObjective, CTCTranscription, CTCVocab
from recipes.prepare.no_demo_part import tasks_with_demo_parts
from recipes.superb_sg import OOD_ASR_GROUP, OOD_TASKS, SG_PART2_TASKS
from superbench import metrics
from superbench.manifest import ManifestError, load_task_manifest, write_task_manifest
from superbench.tasks import TASKS, Task, all_tasks, get_task, resolve_tasks, task_groups

SR = 16000


def declared(name: str):
    return importlib.import_module(f"recipes.{name}").TASK


def test_tasks_are_builtins_of_one_group_after_se_and_ss() -> None:
    assert OOD_TASKS == ("ood_es", "ood_zh", "ood_ar", "ood_sbcsae") and SG_PART2_TASKS == (*OOD_TASKS, "st")
    assert set(SG_PART2_TASKS) <= set(recipes.BUILTIN_TASKS)  # part of --task all
    names = [t.name for t in all_tasks()]
    assert names[names.index("ss") + 1:][:5] == ["st", *OOD_TASKS]  # columns after SE and SS, before VC
    assert names[-1] == "vc"
    assert task_groups() == {OOD_ASR_GROUP: list(OOD_TASKS)}
    for name in OOD_TASKS:
        task = declared(name)
        assert task is get_task(name) and task.group == OOD_ASR_GROUP
        assert task.name == name and task.target == "text" and not task.higher_is_better
        assert isinstance(task.kind, CTCTranscription) and task.kind.inventory == "train"
        assert task.metric == ("cer" if name == "ood_zh" else "wer")
        for profile in ("superb", "fast", "ci"):
            assert task.load_recipe(profile).task == name


def test_group_name_expands_to_its_tasks_once_each_in_column_order() -> None:
    assert [t.name for t in resolve_tasks("st,ood_asr")] == ["st", *OOD_TASKS]
    assert [t.name for t in resolve_tasks("ood_zh,OOD_ASR,ks")] == ["ood_zh", "ood_es", "ood_ar", "ood_sbcsae", "ks"]


def test_a_group_named_as_a_task_is_refused() -> None:
    clash = Task(name=OOD_ASR_GROUP, description="a task named as the group", metric="wer", higher_is_better=False,
                 target="text", kind=CTCTranscription(unit="chars"),
                 recipe=Path(recipes.__file__).with_name("asr.yaml"))
    with TASKS.scoped():
        TASKS.register(OOD_ASR_GROUP, clash, source="a test")
        with pytest.raises(ValueError, match=r"task group 'ood_asr' \(tasks ood_es, ood_zh, ood_ar, ood_sbcsae\) "
                                             r"has the name of the task 'ood_asr' \(a test\)"):
            resolve_tasks("ks")


def test_demo_skips_sbcsae_only_when_it_came_through_all_or_the_group() -> None:
    ood = resolve_tasks("ood_asr")
    kept, notes = tasks_with_demo_parts(ood, ["ood_asr"])
    assert [t.name for t in kept] == ["ood_es", "ood_zh", "ood_ar"]
    assert notes == ["ood_sbcsae: skipped, the demo corpus has no part for it (SBCSAE is spontaneous conversation "
                     "(fillers, repairs, overlapping talk), which eSpeak's read speech cannot stand in for)"]
    kept, notes = tasks_with_demo_parts(ood, ["ood_asr", " OOD_SBCSAE"])  # named on its own: kept (and fails on
    assert [t.name for t in kept] == list(OOD_TASKS) and notes == []    # its missing folder, as any task would)


@pytest.mark.parametrize("name", OOD_TASKS)
def test_superb_profile_is_s3prls_config(name: str) -> None:
    recipe = declared(name).load_recipe("superb")
    head, train = recipe.head, recipe.train
    assert (head.proj_dim, head.rnn_dims, head.dropout, head.rnn_proj, head.frame_stack) == (1024, (1024, 1024),
                                                                                             0.2, True, 1)
    assert head.specaugment and (head.num_freq_mask, head.num_time_mask, head.time_warp_window) == (4, 2, 5)
    assert (train.steps, train.batch_size, train.lr, train.grad_clip) == (500000, 16, 1.0e-4, 1.0)
    assert train.eval_interval == (5000 if name in ("ood_zh", "ood_ar") else 2000)
    assert train.bucketing and train.bucket_halve_above == (300000 if name == "ood_sbcsae" else 900000)
    assert recipe.deviations


def test_cer_is_character_edits_over_reference_characters() -> None:
    assert metrics.cer(["你好吗"], ["你好"]) == pytest.approx(100 / 3)
    assert metrics.cer(["AB  CD", "E"], ["AB CD", ""]) == pytest.approx(100 * 1 / 6)  # space counts, once
    obj = CTCObjective(CTCVocab.for_texts(["你好吗"]), "cer")
    units = obj.unit_scores(["a", "b"], ["你好吗", "好"], ["你好", "好"])["cer"]
    assert obj.score(["你好吗", "好"], ["你好", "好"]) == pytest.approx(25.0)
    assert units.unit == "utterance"


def test_rnn_proj_adds_a_tanh_projection_after_each_bilstm() -> None:
    head = CTCHead(2, 8, 5, proj_dim=6, rnn_dims=(4, 4), rnn_proj=True)
    assert [tuple(p.weight.shape) for p in head.rnn_projs] == [(8, 8), (8, 8)]
    out = head(torch.randn(2, 3, 7, 8), torch.tensor([7, 5, 3]))
    assert out.shape == (3, 7, 5)
    assert CTCHead(2, 8, 5, rnn_dims=(4,)).rnn_projs is None


def _corpus(root: Path, texts: dict[str, list[str]]) -> Path:
    folder = root / "ood_es"
    (folder / "wav").mkdir(parents=True)
    splits = {}
    for split, lines in texts.items():
        rows = []
        for k, text in enumerate(lines):
            path = folder / "wav" / f"{split}{k}.wav"
            sf.write(path, 0.1 * np.random.default_rng(k).standard_normal(SR // 2).astype(np.float32), SR)
            rows.append({"id": f"{split}-{k}", "audio": f"wav/{path.name}", "sample_rate": SR,
                         "num_samples": SR // 2, "speaker": "s", "text": text})
        splits[split] = rows
    return write_task_manifest(folder, task="ood_es", corpus="t", version="1", label_field="text", labels=[],
                               splits=splits)


def test_vocabulary_is_built_from_the_training_transcripts(tmp_path: Path) -> None:
    folder = _corpus(tmp_path, {"train": ["HOLA AMIGO", "BUENOS DIAS"], "dev": ["HOLA"], "test": ["DIAS"]})
    task = declared("ood_es")
    manifest = load_task_manifest(folder)
    task.check_manifest(manifest)
    setup = task.kind.setup(task, manifest, task.load_recipe("ci").head, 2, 8, None)
    assert set(setup.objective.vocab.tokens) == {"<blank>", "|", *"HOLAMIGBUENSD"}


def test_a_test_character_outside_the_training_inventory_names_file_and_line(tmp_path: Path) -> None:
    folder = _corpus(tmp_path, {"train": ["HOLA AMIGO", "BUENOS DIAS"], "dev": ["HOLA"],
                                "test": ["DIAS", "AÑO NIÑO", "HOLA"]})
    task = declared("ood_es")
    with pytest.raises(ManifestError) as err:
        task.check_manifest(load_task_manifest(folder))
    message = str(err.value)
    assert f"{folder / 'test.jsonl'}:2 id='test-1': 'Ñ'" in message
    assert "characters outside the training transcripts' inventory (train.jsonl)" in message
    assert "1 row(s)" in message
    # the same corpus passes with the default inventory (every split's characters, as ASR)
    asr_kind = CTCTranscription(unit="chars")
    asr_kind.check(task, load_task_manifest(folder))
    assert json.loads((folder / "test.jsonl").read_text().splitlines()[1])["text"] == "AÑO NIÑO"


def test_the_inventory_option_is_checked() -> None:
    with pytest.raises(ValueError, match="'all' or 'train'"):
        CTCTranscription(unit="chars", inventory="dev")
    with pytest.raises(ValueError, match="for unit='chars'"):
        CTCTranscription(unit="phones", inventory="train")
    with pytest.raises(ValueError, match="'wer', 'per' or 'cer'"):
        CTCObjective(CTCVocab.for_texts(["A"]), "ser")
