"""Demo corpus part for `ood_ar` (SUPERB-SG out-of-domain ASR, Arabic): eSpeak NG's `ar` voice, verbal sentences
from the grammar below in Arabic script without diacritics (as Common Voice's Arabic sentences mostly are),
WER. The rest is as demo_ood_es.py, whose helpers this part uses; drawn after demo_ood_zh.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.prepare.demo_ood_es import SIZES, plan_language, write_language

TASK = "ood_ar"
ORDER = 10  # draw order among the demo's parts (see recipes.prepare.demo)
VOICE = "ar"

#: "VERB SUBJECT OBJECT ADJECTIVE [PLACE]" (definite masculine nouns and adjectives, so every pick agrees).
GRAMMAR: dict[str, tuple[str, ...]] = {
    "verb": ("رأى", "أخذ", "وجد", "أحب", "اشترى", "حمل", "فتح", "رسم"),
    "subject": ("الولد", "المعلم", "الرجل", "الطالب", "الطبيب", "الجار", "الأب", "الصديق"),
    "object": ("الكتاب", "القلم", "الباب", "الكرسي", "البيت", "الحصان", "القميص", "الصندوق"),
    "adj": ("الكبير", "الصغير", "الجديد", "القديم", "الأحمر", "الجميل"),
    "place": ("", "", "في الحديقة", "في السوق", "في المدرسة", "في الصباح"),
}


def sentence(pick: Any) -> str:
    words = [pick("verb"), pick("subject"), pick("object"), pick("adj"), pick("place")]
    return " ".join(w for w in words if w)


def plan(p: Any) -> None:
    plan_language(p, TASK, VOICE, sentence, GRAMMAR, SIZES)


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path:
    return write_language(p, out, fill, common, extra_common, TASK, VOICE, GRAMMAR)
