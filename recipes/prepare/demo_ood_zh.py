"""Demo corpus part for `ood_zh` (SUPERB-SG out-of-domain ASR, Mandarin): eSpeak NG's `cmn` voice, sentences
from the grammar below written in Chinese characters, transcripts without spaces (CER). The rest is as
demo_ood_es.py, whose helpers this part uses; drawn after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recipes.prepare.demo_ood_es import SIZES, plan_language, write_language

TASK = "ood_zh"
ORDER = 9  # draw order among the demo's parts (see recipes.prepare.demo)
VOICE = "cmn"

#: "SUBJECT TIME VERB NUMBER MEASURE+ADJ的NOUN": the measure word goes with its noun.
GRAMMAR: dict[str, tuple[str, ...]] = {
    "subject": ("我", "你", "他", "她", "我们", "老师", "妈妈", "小明"),
    "time": ("今天", "昨天", "早上", "晚上"),
    "verb": ("买了", "看见了", "找到了", "画了", "喜欢", "想要"),
    "number": ("一", "两", "三", "几"),
    "adj": ("红色", "蓝色", "很大", "很小", "新", "漂亮"),
    "noun": ("只猫", "条狗", "本书", "辆车", "个苹果", "朵花", "张桌子", "把椅子"),
}


def sentence(pick: Any) -> str:
    noun = pick("noun")
    return f"{pick('subject')}{pick('time')}{pick('verb')}{pick('number')}{noun[0]}{pick('adj')}的{noun[1:]}"


def plan(p: Any) -> None:
    plan_language(p, TASK, VOICE, sentence, GRAMMAR, SIZES)


def write(p: Any, out: Path, fill: Any, common: dict, extra_common: dict) -> Path:
    return write_language(p, out, fill, common, extra_common, TASK, VOICE, GRAMMAR)
