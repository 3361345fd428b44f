"""Intent classification (IC, Fluent Speech Commands): three slots per utterance, one head.

Checked against s3prl's `downstream/fluent_commands` at commit ec8064b (tag 0.4.18):

* config.yaml: `projector_dim: 256`, `select: UtteranceLevel`, `UtteranceLevel: {pooling: MeanPooling}`;
* expert.py: `projector = Linear(upstream_dim, 256)`, then `UtteranceLevel(input_dim=256,
  output_dim=sum(values_per_slot))` from `downstream/model.py`, which is `MeanPooling` over the valid
  frames followed by its default post_net `FrameLevel` without hiddens, i.e. one Linear. The logits
  are the three slots' logits side by side (action, object, location); the loss is the *sum* over
  slots of `CrossEntropyLoss` (mean over the batch) on each slot's slice; the prediction is the argmax
  per slot; `acc` is the fraction of utterances whose three slots are all right;
* expert.py builds each slot's inventory from the training CSV only (`Counter(train_df[slot])`), so a
  dev/test slot value unseen in training has no output (s3prl fails with a KeyError).
  (fluent_commands/model.py holds other poolings and a transformer `Model`, unused by this config.)

So the head is exactly `downstreams.utterance.UtteranceHead` (Linear -> masked mean -> Linear, exact
on cached per-layer means) with `num_classes` = the sum of the slot sizes; only the objective differs.

Manifest: the label field is `intent`, the three slot values joined by `|`
("activate|lights|kitchen"); meta.json `labels` are the intents seen. Rows may also carry the slot
fields (`action`, `object`, `location`), which must then agree with `intent`. The slot inventories
are derived from `labels` (each slot's distinct values, sorted), so they need no second source of
truth; meta.json `extra["slots"]`, when a preparer writes it for readers, must list the same values.
A target is the intent's index in `labels`; a prediction is the index of the predicted combination,
or the joined string when the head predicts a combination that is not an intent of the inventory
(FSC has 31 intents out of 6 x 14 x 4 slot combinations): it never equals a target, so it counts wrong.
Trial groups (superbench.trial_group) use `StackedIntentHeads`, the utterance head's stacked form with
this loss's gradient (checked against autograd, and grouped runs against one-at-a-time runs, in tests/test_ic.py).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from downstreams.utterance import StackedUtteranceHeads, UtteranceHead, UtteranceHeadConfig, correct_bits
from superbench import metrics
from superbench.downstream import Objective
from superbench.manifest import ManifestError, TaskManifest, format_problems
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import UnitScores

#: Fluent Speech Commands' slots, in s3prl's order.
SLOTS = ("action", "object", "location")
SEPARATOR = "|"


def join_intent(values: Sequence[str]) -> str:
    """The manifest's `intent` value of one (action, object, location) triple."""
    return SEPARATOR.join(values)


def split_intent(intent: Any, n_slots: int = len(SLOTS)) -> tuple[str, ...] | None:
    """The slot values of an `intent` value, or None when it is not `n_slots` non-empty parts."""
    if not isinstance(intent, str):
        return None
    parts = tuple(intent.split(SEPARATOR))
    if len(parts) != n_slots or not all(p.strip() for p in parts):
        return None
    return parts


def slot_inventories(intents: Sequence[str], slots: Sequence[str] = SLOTS) -> dict[str, list[str]]:
    """Each slot's values (sorted) over `intents`: the head's output layout."""
    parts = [split_intent(i, len(slots)) for i in intents]
    bad = [i for i, p in zip(intents, parts) if p is None]
    if bad:
        raise ValueError(f"intents that are not {len(slots)} '{SEPARATOR}'-joined slot values: {bad[:5]}")
    return {slot: sorted({p[s] for p in parts}) for s, slot in enumerate(slots)}  # type: ignore[index]


class IntentObjective(Objective):
    """Sum over slots of the per-slot cross-entropy (s3prl fluent_commands); `acc` = all slots right.

    Targets are intent indices into `intents`; `slot_targets` maps them to per-slot indices.
    """

    metric, higher_is_better = "acc", True

    def __init__(self, intents: Sequence[str], slots: Sequence[str] = SLOTS) -> None:
        self.intents = list(intents)
        self.slots = list(slots)
        self.inventories = slot_inventories(self.intents, self.slots)
        self.sizes = [len(self.inventories[s]) for s in self.slots]
        self.offsets = [sum(self.sizes[:k]) for k in range(len(self.sizes))]
        position = [{v: i for i, v in enumerate(self.inventories[s])} for s in self.slots]
        parts = [split_intent(i, len(self.slots)) for i in self.intents]
        #: (num_intents, num_slots): each intent's value index per slot.
        self.table = torch.tensor([[position[s][p[s]] for s in range(len(self.slots))] for p in parts],
                                  dtype=torch.long)
        self._intent_of = {tuple(row): k for k, row in enumerate(self.table.tolist())}

    @property
    def num_outputs(self) -> int:
        return sum(self.sizes)

    def slot_targets(self, targets: Sequence[int] | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """(..., num_slots) slot indices of intent indices, on `device` (the targets' device by default)."""
        index = torch.as_tensor(targets, dtype=torch.long, device=device)
        if self.table.device != index.device:  # moved once, then kept where the training runs
            self.table = self.table.to(index.device)
        return self.table[index]

    def slices(self, output: torch.Tensor) -> list[torch.Tensor]:
        """The per-slot logits of (..., num_outputs) logits."""
        return list(torch.split(output, self.sizes, dim=-1))

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        y = self.slot_targets(targets, output.device)
        return sum(F.cross_entropy(logits, y[:, s]) for s, logits in enumerate(self.slices(output)))

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        picked = torch.stack([logits.argmax(dim=-1) for logits in self.slices(output)], dim=-1).tolist()
        out: list = []
        for row in picked:
            k = self._intent_of.get(tuple(row))
            out.append(k if k is not None else
                       join_intent(self.inventories[s][v] for s, v in zip(self.slots, row)))
        return out

    def score(self, targets: list, predictions: list) -> float:
        """Percent of utterances with every slot right (a predicted intent equals the target intent)."""
        return metrics.accuracy(targets, predictions)

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        return {self.metric: correct_bits(ids, targets, predictions)}


def _check_rows(manifest: TaskManifest, field: str, slots: Sequence[str]) -> None:
    """Every row's intent splits into the slots and agrees with the row's slot fields."""
    bad = []
    for split, rows in manifest.splits.items():
        for u in rows:
            value = u.targets.get(field)
            parts = split_intent(value, len(slots))
            where = f"{split}.jsonl id={u.id!r}"
            if parts is None:
                bad.append(f"{where}: {field} {value!r} is not {len(slots)} '{SEPARATOR}'-joined values "
                           f"({', '.join(slots)})")
                continue
            wrong = [f"{slot} {u.targets[slot]!r} vs {part!r}" for slot, part in zip(slots, parts)
                     if slot in u.targets and u.targets[slot] != part]
            if wrong:
                bad.append(f"{where}: slot field(s) disagree with {field} {value!r}: {'; '.join(wrong)}")
    if bad:
        raise ManifestError(f"{manifest.root}: invalid manifest\n"
                            + format_problems(f"an {field!r} that does not split into its slots", bad))


def _check_labels(manifest: TaskManifest, slots: Sequence[str]) -> None:
    bad = [label for label in manifest.labels if split_intent(label, len(slots)) is None]
    if bad:
        raise ManifestError(f"{manifest.root}/meta.json: {len(bad)} label(s) are not {len(slots)} "
                            f"'{SEPARATOR}'-joined slot values ({', '.join(slots)}): {bad[:5]}")
    declared = manifest.extra.get("slots")
    if declared is None:
        return
    derived = slot_inventories(manifest.labels, slots)
    if not isinstance(declared, dict) or any(sorted(declared.get(s, [])) != derived[s] for s in slots):
        raise ManifestError(f"{manifest.root}/meta.json: extra.slots {declared!r} does not list the slot values of "
                            f"the intents in 'labels' ({derived})")


def _check_unseen(manifest: TaskManifest, field: str, slots: Sequence[str]) -> None:
    """Slot values (always) and intents (unless the manifest opts out) in a fold's dev/test but not its train."""
    problems = []
    for fold in manifest.folds:
        train = [split_intent(u.targets[field], len(slots)) for u in manifest.splits[fold.train]]
        seen_values = [{p[s] for p in train} for s in range(len(slots))]
        seen_intents = {u.targets[field] for u in manifest.splits[fold.train]}
        for held in dict.fromkeys((fold.dev, fold.test)):
            if held == fold.train:
                continue
            unseen: dict[str, list[str]] = defaultdict(list)
            for u in manifest.splits[held]:
                parts = split_intent(u.targets[field], len(slots))
                for s, slot in enumerate(slots):
                    if parts[s] not in seen_values[s]:
                        unseen[f"{slot} {parts[s]!r}"].append(u.id)
                if not manifest.allow_unseen_labels and u.targets[field] not in seen_intents:
                    unseen[f"{field} {u.targets[field]!r}"].append(u.id)
            for what, ids in sorted(unseen.items()):
                problems.append(f"{held}.jsonl id={ids[0]!r}: {what} never in {fold.train}.jsonl (fold "
                                f"{fold.name!r}; {len(ids)} row(s))")
    if problems:
        raise ManifestError(f"{manifest.root}: values in dev/test that training never sees (the head has no "
                            "output for an unseen slot value):\n" + format_problems("unseen values", problems))


class IntentClassification(TaskKind):
    """Task kind: an (action, object, location) triple per utterance, one logit slice per slot; pooled cache."""

    level = "utterance"
    head_config = UtteranceHeadConfig  # proj_dim, as for the other utterance tasks

    def __init__(self, slots: Sequence[str] = SLOTS) -> None:
        self.slots = tuple(slots)

    def check(self, task: Task, manifest: TaskManifest) -> None:
        _check_labels(manifest, self.slots)
        _check_rows(manifest, task.target, self.slots)
        manifest.check_inventory(task.target)
        _check_unseen(manifest, task.target, self.slots)

    def setup(self, task: Task, manifest: TaskManifest, head: UtteranceHeadConfig, num_layers: int,
              hidden_size: int, layer: int | str | None) -> TaskSetup:
        objective = IntentObjective(manifest.labels, self.slots)
        index = {name: i for i, name in enumerate(manifest.labels)}
        field = task.target

        def target_of(u: Any) -> int:
            return index[u.targets[field]]

        def stack(heads: list[torch.nn.Module]) -> StackedIntentHeads:
            return StackedIntentHeads(heads, objective)

        return TaskSetup(objective, target_of,
                         lambda: UtteranceHead(num_layers, hidden_size, objective.num_outputs, proj_dim=head.proj_dim,
                                               layer=layer),
                         stack=stack)


class StackedIntentHeads(StackedUtteranceHeads):
    """K intent heads as stacked tensors (superbench.trial_group): the utterance head's forward, with
    the IC loss: sum over slots of the batch-mean cross-entropy of each slot's logit slice.

    Its gradient w.r.t. the logits is, per slot slice, (softmax - one-hot) / B; the rest of the
    backward is the two linear layers and the layer-weight softmax, as in `StackedUtteranceHeads`.
    Targets (K, B) are intent indices.
    """

    def __init__(self, heads: list[UtteranceHead], objective: IntentObjective) -> None:
        super().__init__(heads)
        self.objective = objective

    def loss_and_logit_grad(self, o: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The IC loss per trial (K,) and its gradient w.r.t. the logits (K, B, C): per slot slice,
        (softmax - one-hot) / B; the rest of the backward is `StackedUtteranceHeads.loss_and_grads`."""
        batch = o.shape[1]
        y = self.objective.slot_targets(targets, o.device)  # (K, B, S)
        loss = o.new_zeros(o.shape[0])
        d_parts = []
        for k, part in enumerate(self.objective.slices(o)):
            log_p = torch.log_softmax(part, dim=-1)
            loss += -log_p.gather(-1, y[..., k:k + 1]).squeeze(-1).mean(dim=1)
            d = log_p.exp_()
            d.scatter_add_(-1, y[..., k:k + 1], torch.full_like(d[..., :1], -1.0))
            d_parts.append(d)
        return loss, torch.cat(d_parts, dim=-1).div_(batch)
