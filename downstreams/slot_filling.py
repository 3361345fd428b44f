"""Slot filling (SF, Audio SNIPS): CTC over characters plus slot-boundary tokens, as s3prl's
`downstream/ctc` "character-slot" mode (snips.yaml, text.py `CharacterTextSlotEncoder`, metric.py).

Target markup (the manifest field, e.g. `slots`): words separated by spaces, each slot value wrapped
in a `B-<slot>` token before its first word and an `E-<slot>` token after its last, e.g.
`PLAY B-artist THE BEATLES E-artist ON B-service SPOTIFY E-service`. A slot holds at least one word,
slots neither nest nor cross, and no word may itself start with `B-` or `E-`. Words keep their case
(SNIPS is upper case, as s3prl's text files); slot names are as the corpus spells them.

CTC tokens, as s3prl's encoder emits them: each `B-x`/`E-x` is one token, every other character is one
token, and `|` separates words; a `B-x` comes after the separator that precedes its first word and an
`E-x` right after its last word: `P L A Y | B-artist T H E | B E A T L E S E-artist | O N`. Decoding
renders tokens the way s3prl's `decode` does (`B-x` as "B-x ", `E-x` as " E-x", `|` as a space) and
collapses runs of spaces, so a decoded target is its markup again and the metrics see exactly the strings
s3prl's metric.py sees.

The head is the ASR one (`downstreams.ctc.CTCHead`, `CTCHeadConfig`); only the vocabulary, the
targets and the metrics differ from `CTCTranscription`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from downstreams.ctc import WORD_SEP, CTCHead, CTCHeadConfig, CTCObjective, CTCVocab, greedy_decode
from superbench.downstream import Objective
from superbench.manifest import ManifestError, TaskManifest, format_problems
from superbench.metrics import edit_distance
from superbench.tasks import Task, TaskKind, TaskSetup
from superbench.uncertainty import UnitScores

BEGIN, END = "B-", "E-"
#: Characters a token may not contain: s3prl joins slots as "value:type;value:type" before splitting them
#: again, so a value or a slot name holding one of them has no defined score there.
RESERVED = (":", ";")


class SlotMarkupError(ValueError):
    """A target whose slot markup does not parse (the message says where and why)."""


@dataclass(frozen=True)
class Slot:
    name: str  # the slot type, e.g. "artist"
    value: str  # its words joined by single spaces, e.g. "THE BEATLES"


def is_tag(token: str) -> bool:
    """A `B-<slot>` or `E-<slot>` token (a non-empty slot name after the prefix)."""
    return len(token) > 2 and token[:2] in (BEGIN, END)


def parse_slots(markup: str) -> list[Slot]:
    """The slots of well-formed markup, in order; SlotMarkupError for unbalanced or mismatched tags,
    a slot inside another, or a slot with no words."""
    slots: list[Slot] = []
    open_name: str | None = None
    words: list[str] = []
    for i, token in enumerate(markup.split()):
        if token.startswith(BEGIN) and is_tag(token):
            if open_name is not None:
                raise SlotMarkupError(f"{token!r} (token {i + 1}) opens a slot inside the open slot {open_name!r}")
            open_name, words = token[2:], []
        elif token.startswith(END) and is_tag(token):
            name = token[2:]
            if open_name is None:
                raise SlotMarkupError(f"{token!r} (token {i + 1}) closes a slot that was never opened")
            if name != open_name:
                raise SlotMarkupError(f"{token!r} (token {i + 1}) closes slot {open_name!r}: mismatched tags")
            if not words:
                raise SlotMarkupError(f"slot {name!r} (ending at token {i + 1}) has an empty value")
            slots.append(Slot(name, " ".join(words)))
            open_name = None
        elif token in (BEGIN, END):
            raise SlotMarkupError(f"{token!r} (token {i + 1}) is a slot tag without a slot name")
        else:
            if open_name is not None:
                words.append(token)
    if open_name is not None:
        raise SlotMarkupError(f"slot {open_name!r} is never closed (no E-{open_name})")
    return slots


def markup_tokens(markup: str) -> list[str]:
    """The CTC tokens of `markup` (see the module docstring), s3prl's `CharacterTextSlotEncoder.encode`
    without its <eos>."""
    out: list[str] = []
    need_sep = False
    for token in markup.split():
        if token.startswith(END) and is_tag(token):
            out.append(token)
            continue
        if need_sep:
            out.append(WORD_SEP)
            need_sep = False
        if token.startswith(BEGIN) and is_tag(token):
            out.append(token)
        else:
            out.extend(token)
            need_sep = True
    return out


def markup_units(markup: Any) -> list[str]:
    """The inventory units of `markup`: its slot tags and the characters of its words (no separator, so a
    word holding `|` is caught as a character outside the inventory)."""
    return [u for token in str(markup).split() for u in ([token] if is_tag(token) else list(token))]


def render(tokens: Sequence[str]) -> str:
    """Tokens as s3prl's decoder writes them (`B-x` -> "B-x ", `E-x` -> " E-x", `|` -> " "), runs of
    spaces collapsed (as metric.py's parse does first) and the ends stripped."""
    parts = []
    for t in tokens:
        if t == WORD_SEP:
            parts.append(" ")
        elif t.startswith(BEGIN) and is_tag(t):
            parts.append(t + " ")
        elif t.startswith(END) and is_tag(t):
            parts.append(" " + t)
        else:
            parts.append(t)
    return re.sub(r" +", " ", "".join(parts)).strip()


# --------------------------------------------------------------------------- s3prl's metrics (metric.py)

_SLOT = re.compile(r"B\-(\S+) (.+?) E\-\1")


def _clean(text: str) -> str:
    text = re.sub(r"B\-(\S+) ", "", text)
    return re.sub(r" E\-(\S+)", "", text)


def _slot_dict(text: str, clean_values: bool) -> dict[str, list[str]]:
    """{slot type: [values]} found by metric.py's regex (non-greedy value, same type closing it);
    hypothesis values are cleaned of stray tags, reference values are not (as there)."""
    out: dict[str, list[str]] = {}
    for name, value in _SLOT.findall(re.sub(r" +", " ", text)):
        out.setdefault(name, []).append(_clean(value) if clean_values else value)
    return out


def _check_lists(targets: Sequence[str], predictions: Sequence[str]) -> None:
    if len(targets) != len(predictions) or not targets:
        raise ValueError(f"slot metrics need equal, non-empty lists (got {len(targets)} and {len(predictions)})")


def slot_type_f1(targets: Sequence[str], predictions: Sequence[str]) -> float:
    """s3prl's `slot_type_f1`, in percent: per utterance, the F1 between the *sets* of slot types in the
    reference and in the hypothesis (values ignored, a type counted once however often it occurs), then
    the plain mean over utterances (every utterance weighs the same). An utterance with no slot on either
    side scores 1, one with slots on one side only scores 0."""
    _check_lists(targets, predictions)
    f1s = [utterance_slot_type_f1(ref, hyp) for ref, hyp in zip(targets, predictions)]
    return 100.0 * sum(f1s) / len(f1s)


def utterance_slot_type_f1(ref: str, hyp: str) -> float:
    """One utterance's slot-type F1 (a fraction), as `slot_type_f1` averages it."""
    ref_types, hyp_types = set(_slot_dict(ref, False)), set(_slot_dict(hyp, True))
    if not ref_types and not hyp_types:
        return 1.0
    if not ref_types or not hyp_types:
        return 0.0
    hits = len(ref_types & hyp_types)
    recall, precision = hits / len(ref_types), hits / len(hyp_types)
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def slot_value_cer(targets: Sequence[str], predictions: Sequence[str]) -> float:
    """s3prl's `slot_value_cer`, in percent: corpus-level character error rate over *reference slot
    values*. For every slot occurrence in a reference, the hypothesis value of the same type with the
    lowest CER against it is taken (ties: the first; none of that type, or none below a CER of 100
    (i.e. 10000 %): the empty string); the score is the sum of character edit distances (spaces count)
    over the sum of reference value lengths, over all utterances. Hypothesis slots of types the
    reference lacks cost nothing here (slot-type F1 sees them). ValueError when the references hold no
    slot at all (the rate is undefined; s3prl divides by zero)."""
    _check_lists(targets, predictions)
    counts = [utterance_slot_value_errors(ref, hyp) for ref, hyp in zip(targets, predictions)]
    errors, total = sum(e for e, _ in counts), sum(t for _, t in counts)
    if total == 0:
        raise ValueError("slot-value CER is undefined: the references hold no slot")
    return 100.0 * errors / total


def utterance_slot_value_errors(ref: str, hyp: str) -> tuple[int, int]:
    """One utterance's (character edits, reference characters) over its reference slot values, as
    `slot_value_cer` sums them."""
    errors = total = 0
    ref_slots, hyp_slots = _slot_dict(ref, False), _slot_dict(hyp, True)
    for name, values in ref_slots.items():
        for ref_value in values:
            best = ""
            if name in hyp_slots:
                least = 100.0
                for hyp_value in hyp_slots[name]:
                    rate = edit_distance(ref_value, hyp_value) / len(ref_value)
                    if least > rate:
                        least, best = rate, hyp_value
            errors += edit_distance(ref_value, best)
            total += len(ref_value)
    return errors, total


# --------------------------------------------------------------------------- vocabulary, objective, kind

class SlotVocab(CTCVocab):
    """Characters, `|` and the `B-x`/`E-x` tokens of the manifest's inventory (index 0: the CTC blank)."""

    def __init__(self, labels: Sequence[str]) -> None:
        super().__init__(set(labels) | {WORD_SEP}, "chars")

    def split(self, text: str) -> list[str]:
        return markup_tokens(text)

    def decode(self, ids: Sequence[int]) -> str:
        return render([self.tokens[i] for i in ids if i != 0])


class SlotFillingObjective(Objective):
    """CTC loss and greedy decoding (the ASR objective's), slot-type F1 as the metric that selects the
    checkpoint and the learning rate (s3prl's first metric), slot-value CER as a secondary metric."""

    metric = "f1"
    higher_is_better = True

    def __init__(self, vocab: SlotVocab) -> None:
        self.vocab = vocab
        self._ctc = CTCObjective(vocab, "wer")  # its loss and decoding; its metric is not used

    def loss(self, output: torch.Tensor, lengths: torch.Tensor, targets: list) -> torch.Tensor:
        return self._ctc.loss(output, lengths, targets)

    def predict(self, output: torch.Tensor, lengths: torch.Tensor) -> list:
        return [self.vocab.decode(ids) for ids in greedy_decode(output, lengths)]

    def score(self, targets: list, predictions: list) -> float:
        return slot_type_f1(targets, predictions)

    def secondary_scores(self, targets: list, predictions: list) -> dict[str, float]:
        return {"cer": slot_value_cer(targets, predictions)}

    def unit_scores(self, ids: Sequence[str], targets: list, predictions: list) -> dict[str, UnitScores]:
        """Per utterance: its slot-type F1 (averaged) and its slot-value character edits and length (summed)."""
        pairs = list(zip(targets, predictions))
        counts = [utterance_slot_value_errors(r, h) for r, h in pairs]
        return {"f1": UnitScores.build("mean", "utterance", ids,
                                       {"value": [100.0 * utterance_slot_type_f1(r, h) for r, h in pairs]}),
                "cer": UnitScores.build("ratio", "utterance", ids,
                                        {"errors": [e for e, _ in counts], "total": [t for _, t in counts]})}


def canonical(markup: str) -> str:
    """Markup with single spaces: what a decoded target looks like."""
    return " ".join(str(markup).split())


class SlotFilling(TaskKind):
    """Task kind: slot-annotated transcripts learnt by CTC over characters and slot tokens (see module doc).

    The manifest's `labels` is the token inventory: single characters and `B-<slot>`/`E-<slot>` tokens.
    """

    level = "frame"
    head_config = CTCHeadConfig

    def check(self, task: Task, manifest: TaskManifest) -> None:
        """Refuse, naming file and id: markup that does not parse, tokens outside the inventory, an
        inventory entry that is not a character or a slot tag, and a dev/test split without any slot
        (its slot-value CER would be undefined)."""
        where, field = manifest.root, task.target
        if not manifest.labels:
            raise ManifestError(f"{where}/meta.json: {field!r} needs a token inventory in 'labels' "
                                f"(characters and B-<slot>/E-<slot> tokens)")
        odd = [t for t in manifest.labels if not (len(t) == 1 or is_tag(t)) or t == WORD_SEP or t.isspace()
               or any(c in t for c in RESERVED)]
        if odd:
            raise ManifestError(f"{where}/meta.json: 'labels' entries must be single characters or "
                                f"B-<slot>/E-<slot> tokens, not {WORD_SEP!r}, whitespace, {' or '.join(RESERVED)}; "
                                f"got {odd[:10]}")
        bad = []
        for split, rows in manifest.splits.items():
            for u in rows:
                try:
                    parse_slots(str(u.targets.get(field)))
                except SlotMarkupError as exc:
                    bad.append(f"{split}.jsonl id={u.id!r}: {exc}")
        if bad:
            raise ManifestError(f"{where}: invalid manifest\n" + format_problems(f"{field!r} slot markup that "
                                                                                 f"does not parse", bad))
        manifest.check_inventory(field, units=markup_units)
        for fold in manifest.folds:
            for split in dict.fromkeys((fold.dev, fold.test)):
                if not any(parse_slots(str(u.targets.get(field))) for u in manifest.splits[split]):
                    raise ManifestError(f"{where}/{split}.jsonl: no utterance has a slot; the slot-value CER "
                                        f"of that split would be undefined")

    def setup(self, task: Task, manifest: TaskManifest, head: CTCHeadConfig, num_layers: int,
              hidden_size: int, layer: int | str | None) -> TaskSetup:
        vocab = SlotVocab(manifest.labels)
        field = task.target

        def target_of(u: Any) -> str:
            return canonical(u.targets[field])

        return TaskSetup(SlotFillingObjective(vocab), target_of,
                         lambda: CTCHead(num_layers, hidden_size, len(vocab), proj_dim=head.proj_dim,
                                         rnn_dims=head.rnn_dims, dropout=head.dropout, layer=layer,
                                         frame_stack=head.frame_stack, specaugment=head.make_specaugment(),
                                         feature_layer_norm=head.feature_layer_norm))
