"""Feature-cache benchmark (`make bench`): does caching the frozen upstream pay off?

Runs on the demo corpus (built on first use) with `hubert-base-random` (base-sized,
random init: same compute as HuBERT Base, no download) and `fbank`, and prints:

  1. time-to-score, cached vs --no-cache, same number of updates (KS subset)   goal >= 10x
  2. total time-to-score / one extraction pass (KS, fast recipe incl. lr sweep) goal <= 1.3x
  3. extraction throughput vs the bare upstream forward on the same batches    goal >= 0.9x
  4. peak RSS and cache bytes per utterance as the PR corpus grows x4          goal: flat
  5. torch threads: extraction and head training with 1 vs 2 threads           picks the CLI defaults
  7. Ray (if installed): the ER grid (3 lrs x 5 folds) on 2 Ray workers vs 1 (and the local executor), where
     the 2-worker run's time goes (driver, start-up, cache open, training per group, imbalance), and
     extraction with 2 Ray actors vs 1 (hubert-base-random, CPU-bound)        goals >= 1.6x
  8. int8 vs fp16 frame cache (fbank, demo PR and ASR): bytes (goal 0.5x), training throughput (goal >= 1.0x),
     error vs the float32 features and the score change
  9. on a GPU (or --device): extraction throughput vs the bare forward, fp32 and bf16, and bf16 vs fp32
     speed and error (hubert-base-random)                                       goal >= 0.9x
  10. plan's extraction estimate vs the extraction itself (fbank): the demo (all tasks) and a KS corpus of
     distinct clips (--plan-clips)                                              goal: within 1.5x
  6. the superb schedule (200k updates x the lr sweep) on a Speech-Commands-sized KS corpus of distinct
     clips: time-to-score / one extraction pass, trials grouped                  goal <= 1.3x
     + per-update costs grouped vs one trial at a time (KS, SID, ER) and their equality
 10. audio keys: the full-content hash (the cache's key) vs the former sampled key (path, size, first
     and last 64 KiB) vs fbank extraction, on every demo file and on a synthetic corpus of longer
     files; seconds per MiB                                                     goal: full <= 0.1x extraction
 12. confidence intervals at SUPERB's test-set sizes (synthetic per-unit scores, 1,000 resamples): accuracy
     over 10k utterances (goal < 1 s), WER over LibriSpeech test-clean's 2,620 utterances, EER over
     VoxCeleb1-O's 37,720 trials and DER over 1,000 recordings x 10 settings (goal < 10 s each), MTWV over
     555 queries, and one paired test (bootstrap + approximate randomisation) of two accuracies
 13. SUPERB-SG SE/SS (synthetic batches, superb head: 3-layer BLSTM of 896): time per update at batch 8 for
     fbank and HuBERT Base-sized frames, the share of the on-the-fly STFTs in it, the bytes a cached STFT would
     take beside the frame cache, and the projected wall time of the superb profile (150k updates)
 14. SUPERB-SG ST (synthetic batches, superb s2t_transformer): time per batch of 16 utterances (forward, label-
     smoothed loss, backward) for HuBERT Base-sized frames, and the projected wall time of the superb profile
     (32k updates x gradient accumulation 8)
 15. SUPERB-SG VC (synthetic batches, superb Taco2-AR decoder at 24 kHz mel): time per update at batch 6 for
     fbank and HuBERT Base-sized frames (teacher-forced L1 loss and backward), the autoregressive decoding time
     of one utterance, and the projected wall time of the superb profile (10k updates per target speaker)

Everything goes to a temporary SUPERBENCH_HOME, so every number includes a cold
extraction. Medians over repeats where a repeat is cheap (fbank). This is a
benchmark, not a test: it prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from superbench.manifest import load_task_manifest, write_task_manifest  # noqa: E402

log = logging.getLogger("bench")


def _spread(rows: list, n: int, key) -> list:
    """n rows taken round-robin over the groups of `key` (every class of a split keeps a row), strided within."""
    groups: dict = {}
    for u in rows:
        groups.setdefault(key(u), []).append(u)
    queues = [g[:: max(1, len(g) * len(groups) // n)] for g in groups.values()]
    out = []
    while len(out) < n and any(queues):
        out.extend(q.pop(0) for q in queues if q)
    return out[:n]


def subset(task_dir: Path, out_root: Path, n_train: int, n_eval: int) -> Path:
    """A smaller copy of a task manifest (every class kept in each split, absolute audio paths)."""
    m = load_task_manifest(task_dir)
    fold = m.folds[0]
    classes, target = set(m.labels), m.label_field
    splits = {}
    for split, n in ((fold.train, n_train), (fold.dev, n_eval), (fold.test, n_eval)):
        rows = m.splits[split]
        key = (lambda u: u.targets[target]) if all(u.targets[target] in classes for u in rows) else (lambda u: 0)
        splits[split] = [{"id": u.id, "audio": u.audio, "sample_rate": u.sample_rate, "num_samples": u.num_samples,
                          "speaker": u.speaker, target: u.targets[target]} for u in _spread(rows, n, key)]
    out = out_root / f"{m.task}-{n_train}" / m.task
    write_task_manifest(out, task=m.task, corpus=m.corpus, version=m.version, label_field=m.label_field,
                        labels=m.labels, splits=splits, folds=[fold.__class__("default", fold.train, fold.dev,
                                                                               fold.test)])
    return out.parent


def timed_run(upstream, task: str, data_root: Path, work: Path, profile: str = "fast", **opts
              ) -> tuple[float, object]:
    from superbench.options import RunOptions
    from superbench.runner import run
    from superbench.tasks import get_task

    o = RunOptions.of(results_dir=work / "results", progress=False, cache_root=work.parent / "cache-shared"
                      if opts.pop("shared_cache", False) else work / "cache", profile=profile, overwrite=True,
                      checkpoint_root=work / "ckpt", **opts)
    t0 = time.perf_counter()
    (rec,) = run(upstream, [get_task(task)], data_root, o)
    return time.perf_counter() - t0, rec


def bench_cached_vs_online(upstream, ks_root: Path, work: Path, steps: int) -> dict:
    over = {"steps": steps, "eval_interval": steps}  # batch size stays the recipe's (32, as SUPERB KS)
    t_cached, r_cached = timed_run(upstream, "ks", ks_root, work / "cached", lr=1e-3, overrides=over)
    t_online, r_online = timed_run(upstream, "ks", ks_root, work / "online", lr=1e-3, overrides=over,
                                   use_cache=False)
    # Per-update costs, to say what the measured ratio becomes at a recipe's length (the ratio grows
    # with the number of passes over the data, since the cached run pays the upstream once).
    extraction = r_cached.wall_time["extraction"]
    per_update_cached = r_cached.wall_time["training"] / steps
    per_update_online = (r_online.wall_time["training"] + r_online.wall_time["extraction"]) / steps

    def projected(updates: int) -> float:
        return updates * per_update_online / (extraction + updates * per_update_cached)

    return {"cached_s": t_cached, "no_cache_s": t_online, "ratio": t_online / t_cached,
            "cached_acc": r_cached.test, "no_cache_acc": r_online.test,
            "projected_fast": projected(1500), "projected_superb": projected(200_000)}


def bench_time_to_score(upstream, ks_dir: Path, work: Path) -> dict:
    t_total, rec = timed_run(upstream, "ks", ks_dir, work)
    ext = rec.wall_time["extraction"]
    return {"total_s": t_total, "extraction_s": ext, "training_s": rec.wall_time["training"],
            "ratio": t_total / ext, "acc": rec.test}


def bench_throughput(upstream, task_dir: Path, work: Path, repeats: int, compute=None) -> dict:
    """extract_features vs a bare loop of upstream forwards over the same (pre-loaded) batches, both on
    `compute` (default: the CPU, fp32); the bare loop moves each batch to the device as extraction does."""
    import torch

    from superbench.audio import load_audio
    from superbench.device import Compute, to_device
    from superbench.features.extraction import DEFAULT_BATCH_SAMPLES, DEFAULT_CHUNK_BYTES, extract_features, plan_chunks
    from superbench.upstream import pad_batch

    compute = compute or Compute()
    sync = torch.cuda.synchronize if compute.device.type == "cuda" else (lambda: None)

    m = load_task_manifest(task_dir)
    utts = {u.id: u for u in m.utterances()}
    batches = [b for c in plan_chunks(upstream, list(utts.values()), "utterance", DEFAULT_BATCH_SAMPLES,
                                      DEFAULT_CHUNK_BYTES) for b in c]
    wavs = {uid: load_audio(u.audio) for uid, u in utts.items()}
    bare, full = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode(), compute.autocast():
            for b in batches:
                wav, lengths = pad_batch([wavs[i] for i in b])
                hidden, _ = upstream(to_device(wav, compute.device), lengths)
                [h.float().mean(dim=1).cpu() for h in hidden]  # the pooled rows back on the host, as extraction
        sync()
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        extract_features(upstream, m, "utterance", root=work / f"tp{r}", progress=False, compute=compute)
        full.append(time.perf_counter() - t0)
    b, f = statistics.median(bare), statistics.median(full)
    seconds = sum(u.duration for u in utts.values())
    return {"bare_s": b, "extract_s": f, "ratio": b / f, "audio_s": seconds, "x_realtime": seconds / f}


_RSS_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from superbench.options import RunOptions
from superbench.runner import run
from superbench.tasks import get_task
from superbench.upstream import load_upstream
from pathlib import Path
up = load_upstream({upstream!r})
o = RunOptions.of(results_dir=Path({work!r}) / "results", progress=False, cache_root=Path({work!r}) / "cache",
                  profile="fast", overwrite=True, lr=1e-2, overrides={{"steps": 50, "eval_interval": 50}})
(rec,) = run(up, [get_task("pr")], Path({data!r}), o)
cache = next(Path({work!r}, "cache").rglob("cache.json")).parent
chunks = [json.loads(p.read_text()) for p in cache.glob("*-*.json")]
n = sum(len(c["keys"]) for c in chunks)
print(json.dumps({{"maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "bytes_per_utt": sum(p.stat().st_size for p in cache.glob("*.npy")) / n, "n": n}}))
"""


def bench_memory(upstream_name: str, pr_dir: Path, work: Path, sizes: tuple[int, int]) -> dict:
    out = {}
    for n in sizes:
        root = subset(pr_dir / "pr", work / "subsets", n, max(8, n // 8))
        code = _RSS_CHILD.format(root=str(ROOT), upstream=upstream_name, data=str(root), work=str(work / f"m{n}"))
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
        if res.returncode:
            raise RuntimeError(res.stderr[-2000:])
        out[n] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def bench_threads(upstream, task: str, data_root: Path, work: Path, threads: tuple[int, ...], repeats: int,
                  overrides: dict) -> dict[int, dict[str, float]]:
    """Median extraction and training seconds of one task run per thread count (cold cache each time)."""
    out = {}
    for t in threads:
        ext, tr = [], []
        for r in range(repeats):
            _, rec = timed_run(upstream, task, data_root, work / f"t{t}-{r}", lr=1e-3, overrides=overrides,
                               extract_threads=t, train_threads=t)
            ext.append(rec.wall_time["extraction"])
            tr.append(rec.wall_time["training"])
        out[t] = {"extraction_s": statistics.median(ext), "training_s": statistics.median(tr)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100, help="updates for the cached-vs-no-cache comparison")
    ap.add_argument("--ks-train", type=int, default=96, help="KS training utterances in the no-cache comparison")
    ap.add_argument("--repeats", type=int, default=3, help="repeats for the cheap (fbank) measurements")
    ap.add_argument("--ks-clips", type=int, default=2346,
                    help="clips of the KS corpus of section 6 (2,346: the size s3prl was compared on)")
    ap.add_argument("--superb-upstream", default="hubert-base-random", choices=("hubert-base-random", "fbank"),
                    help="upstream of section 6 (fbank: a quick check of the section itself)")
    ap.add_argument("--superb-steps", type=int, default=None,
                    help="section 6a's updates instead of the recipe's (a quick check; the goal needs the recipe's)")
    ap.add_argument("--er-steps", type=int, default=3000, help="updates per ER trial in section 7")
    ap.add_argument("--device", default="auto",
                    help="device of section 9 (auto = CUDA when available; on a CPU-only machine section 9 is "
                         "skipped unless --device cpu is given)")
    ap.add_argument("--key-files", type=int, default=3000, help="files of section 10's synthetic corpus")
    ap.add_argument("--key-seconds", type=float, default=8.0, help="seconds per file of section 10's synthetic corpus")
    ap.add_argument("--plan-clips", type=int, default=6000, help="clips of the larger corpus of section 11")
    ap.add_argument("--sg-seconds", type=float, nargs=2, default=(3.0, 12.0), metavar=("SE", "SS"),
                    help="utterance length of section 13's SE and SS batches (mean lengths to project from)")
    ap.add_argument("--sg-updates", type=int, default=5, help="timed updates per case in sections 13 and 14")
    ap.add_argument("--st-seconds", type=float, default=5.0,
                    help="utterance length of section 14's ST batches (CoVoST 2 clips are a few seconds)")
    ap.add_argument("--vc-seconds", type=float, default=3.0,
                    help="utterance length of section 15's VC batches (VCC2020 utterances are a few seconds)")
    ap.add_argument("--only", type=int, choices=range(1, 16), action="append", metavar="N",
                    help="run only section N (repeatable); default: all fifteen")
    args = ap.parse_args()
    sections = set(args.only or range(1, 16))
    logging.basicConfig(level=logging.WARNING)
    if 12 in sections:  # synthetic unit scores: no corpus, no upstream
        section_12(args)
    if 13 in sections:  # synthetic batches: no corpus, no upstream
        section_13(args)
    if 14 in sections:
        section_14(args)
    if 15 in sections:
        section_15(args)
    if sections <= {12, 13, 14, 15}:
        return 0
    home = Path(tempfile.mkdtemp(prefix="superbench-bench-"))
    demo_home = os.environ.get("SUPERBENCH_HOME")
    from recipes.prepare.demo import ensure_demo  # the demo lives in the user's home: built once
    from superbench.upstream import load_upstream

    data = Path(ensure_demo(size="default"))
    os.environ["SUPERBENCH_HOME"] = str(home)  # caches and results of this benchmark only
    print(f"demo corpus: {data}\nscratch: {home}  (SUPERBENCH_HOME was {demo_home or 'unset'})\n")
    ups = {"fbank": load_upstream("fbank"), "hubert-base-random": load_upstream("hubert-base-random")}
    ks_small = subset(data / "ks", home / "subsets", args.ks_train, 24)

    if 1 in sections:
        section_1(args, ups, ks_small, home)
    if 2 in sections:
        section_2(ups, data, home)
    if 3 in sections:
        section_3(args, ups, ks_small, home)
    if 4 in sections:
        section_4(data, home)
    if 5 in sections:
        section_5(args, ups, data, ks_small, home)
    if 6 in sections:
        section_6(args, ups, data, home)
    if 7 in sections:
        section_7(args, ups, data, home)
    if 8 in sections:
        section_8(ups, data, home)
    if 9 in sections:
        section_9(args, ups, ks_small, home)
    if 10 in sections:
        section_10(args, ups, data, home)
    if 11 in sections:
        section_11(args, ups, data, home)
    return 0


def section_1(args: argparse.Namespace, ups: dict, ks_small: Path, home: Path) -> None:
    print(f"1. time-to-score, cached vs --no-cache, {args.steps} updates of 32 on KS "
          f"({args.ks_train} train / 24 dev / 24 test utterances; cached includes extraction)")
    for name, up in ups.items():
        r = bench_cached_vs_online(up, ks_small, home / f"c1-{name}", args.steps)
        print(f"   {name:<20} cached {r['cached_s']:7.1f} s   no-cache {r['no_cache_s']:7.1f} s   "
              f"speed-up {r['ratio']:5.1f}x  (goal >= 10x; acc {r['cached_acc']:.1f} vs {r['no_cache_acc']:.1f})")
        print(f"   {'':<20} projected from the per-update costs: {r['projected_fast']:.0f}x at 1,500 updates "
              f"(fast KS recipe), {r['projected_superb']:.0f}x at 200,000 (SUPERB KS)")



def section_2(ups: dict, data: Path, home: Path) -> None:
    print("\n2. total time-to-score / one extraction pass (full demo KS, fast recipe with its lr sweep)")
    for name, up in ups.items():
        r = bench_time_to_score(up, data, home / f"c2-{name}")
        print(f"   {name:<20} total {r['total_s']:7.1f} s  extraction {r['extraction_s']:7.1f} s  "
              f"training {r['training_s']:6.1f} s  ratio {r['ratio']:4.2f}x  (goal <= 1.3x; acc {r['acc']:.1f})")



def section_3(args: argparse.Namespace, ups: dict, ks_small: Path, home: Path) -> None:
    print("\n3. extraction throughput vs the bare upstream forward on the same batches (KS subset)")
    for name, up in ups.items():
        r = bench_throughput(up, ks_small / "ks", home / f"c3-{name}", args.repeats if name == "fbank" else 1)
        print(f"   {name:<20} bare {r['bare_s']:6.2f} s  extract {r['extract_s']:6.2f} s  "
              f"ratio {r['ratio']:4.2f}x (goal >= 0.9x)  {r['x_realtime']:.0f}x real time")



def section_4(data: Path, home: Path) -> None:
    print("\n4. peak RSS and cache bytes per utterance, PR frame cache (fbank), corpus x4")
    mem = bench_memory("fbank", data, home / "c4", (60, 240))
    (n1, a), (n2, b) = sorted(mem.items())
    print(f"   {n1:4d} train utts: peak RSS {a['maxrss_mb']:6.0f} MB, {a['bytes_per_utt'] / 1024:7.1f} KiB/utt")
    print(f"   {n2:4d} train utts: peak RSS {b['maxrss_mb']:6.0f} MB, {b['bytes_per_utt'] / 1024:7.1f} KiB/utt")
    print(f"   RSS growth x{b['maxrss_mb'] / a['maxrss_mb']:.2f} for corpus x{n2 / n1:.0f} (goal: flat)")


def section_5(args: argparse.Namespace, ups: dict, data: Path, ks_small: Path, home: Path) -> None:
    print("\n5. torch threads (1 vs 2): extraction and head training, medians; the CLI's defaults follow this")
    asr_small = subset(data / "asr", home / "subsets", 96, 24)
    cases = [("hubert-base-random", "ks", ks_small, 1, {"steps": 300, "eval_interval": 300}),
             ("fbank", "ks", ks_small, args.repeats, {"steps": 300, "eval_interval": 300}),
             ("fbank", "asr", asr_small, args.repeats, {"steps": 60, "eval_interval": 60})]
    for name, task, root, repeats, over in cases:
        r = bench_threads(ups[name], task, root, home / f"c5-{name}-{task}", (1, 2), repeats, over)
        one, two = r[1], r[2]
        print(f"   {name:<20} {task:<4} extraction 1 thr {one['extraction_s']:6.2f} s, "
              f"2 thr {two['extraction_s']:6.2f} s (x{one['extraction_s'] / two['extraction_s']:.2f});  "
              f"training 1 thr {one['training_s']:6.2f} s, "
              f"2 thr {two['training_s']:6.2f} s (x{one['training_s'] / two['training_s']:.2f})")


def ks_corpus_of_distinct_clips(demo: Path, out: Path, n_clips: int) -> Path:
    """A KS corpus of `n_clips` distinct 1-s files (80/10/10 %): the demo's KS clips cycled, each copy with its
    own faint dither, so the audio-keyed cache extracts every one (a copy of the same bytes would be free)."""
    import numpy as np
    import soundfile as sf

    from superbench.audio import load_audio

    src = load_task_manifest(demo / "ks")
    rng = np.random.default_rng(0)
    pool = [u for split in src.splits.values() for u in split]
    pool = [pool[i] for i in rng.permutation(len(pool))]  # every class in every split, whatever n_clips
    sizes = {"train": n_clips - 2 * (n_clips // 10), "dev": n_clips // 10, "test": n_clips // 10}
    (out / "ks" / "wav").mkdir(parents=True, exist_ok=True)
    splits, k = {}, 0
    for split, n in sizes.items():
        rows = []
        for _ in range(n):
            u = pool[k % len(pool)]
            path = out / "ks" / "wav" / f"{k:05d}.wav"
            if not path.is_file():
                wav = load_audio(u.audio) + 1e-4 * rng.standard_normal(u.num_samples).astype("float32")
                sf.write(path, wav, u.sample_rate)
            rows.append({"id": f"{split}-{k:05d}", "audio": str(path), "sample_rate": u.sample_rate,
                         "num_samples": u.num_samples, "speaker": u.speaker, "label": u.targets["label"]})
            k += 1
        splits[split] = rows
    write_task_manifest(out / "ks", task="ks", corpus="superbench-demo-distinct", version="1", label_field="label",
                        labels=src.labels, splits=splits)
    return out


#: Hours of audio of the real SUPERB corpora (train+dev+test as SUPERB uses them), for the projections.
REAL_HOURS = {"ks": 18.0, "sid": 352.0, "er": 12.0}


def per_update(upstream, task: str, root: Path, work: Path, steps: int, grouped: bool) -> tuple[float, object]:
    """Seconds per trial-update of the superb profile's head and batches (lr sweep, folds), features cached."""
    over = {"train.steps": steps, "train.eval_interval": steps}
    _, rec = timed_run(upstream, task, root, work / f"{task}-{steps}-{grouped}", profile="superb",
                       overrides=over, group_trials=grouped, shared_cache=True)
    return rec.wall_time["training"] / (steps * len(rec.trials)), rec


def section_6(args: argparse.Namespace, ups: dict, data: Path, home: Path) -> None:
    from superbench.tasks import get_task

    up = ups[args.superb_upstream]
    ks_root = ks_corpus_of_distinct_clips(data, home / "ks-distinct", args.ks_clips)
    print(f"\n6. superb schedule, {args.superb_upstream}, trials grouped (hubert-base-random: HuBERT Base size, "
          f"random weights)")
    work = home / "c6"
    # a. the full schedule on KS first: one cold extraction (b and c reuse its cache), then 200k updates x the lr sweep
    full = {"train.steps": args.superb_steps} if args.superb_steps else {}
    t_total, rec = timed_run(up, "ks", ks_root, work / "full", profile="superb", shared_cache=True, overrides=full)
    ext, train_s = rec.wall_time["extraction"], rec.wall_time["training"]
    print(f"   a. KS, {args.ks_clips} clips, {rec.steps} updates x {len(rec.trials)} lrs: total {t_total:7.1f} s = "
          f"extraction {ext:7.1f} s + training {train_s:6.1f} s (+ {t_total - ext - train_s:.1f} s other)  "
          f"ratio {t_total / ext:4.2f}x  (goal <= 1.3x; acc {rec.test:.1f})")
    # b. per-update costs, grouped vs one at a time, on cached features (SID/ER: the demo corpus)
    print("   b. seconds per update of one trial (superb heads and batches, lr sweep, ER's folds), features cached:")
    costs = {}
    for task, root in (("ks", ks_root), ("sid", data), ("er", data)):
        recipe = get_task(task).load_recipe("superb")
        grouped, rec_g = per_update(up, task, root, work, 2000, True)
        single, rec_s = per_update(up, task, root, work, 200, False)
        costs[task] = (grouped, recipe)
        classes = len(load_task_manifest(root / task).labels)
        print(f"      {task:<3} one at a time {single * 1e3:6.2f} ms   grouped ({len(rec_g.trials)} trials) "
              f"{grouped * 1e3:6.2f} ms   x{single / grouped:4.1f}   ({classes} classes)")
    # c. equality on a short schedule (same features, same seeds)
    over = {"train.steps": 300, "train.eval_interval": 100}
    (_, a), (_, b) = (timed_run(up, "ks", ks_root, work / f"eq-{g}", profile="superb", overrides=over,
                                group_trials=g, shared_cache=True) for g in (True, False))
    d_dev = max(abs(x["dev"] - y["dev"]) for x, y in zip(a.trials, b.trials))
    d_test = max(abs(x["test"] - y["test"]) for x, y in zip(a.trials, b.trials))
    same_steps = all(x["best_step"] == y["best_step"] for x, y in zip(a.trials, b.trials))
    print(f"   c. grouped vs one at a time, KS 300 updates x {len(a.trials)} lrs: max |dev diff| {d_dev:.4f}, "
          f"max |test diff| {d_test:.4f}, same best steps: {same_steps}  (goal: equal within float rounding)")
    # d. the same ratio projected to the real corpora, from the measured extraction rate and per-update costs
    m = load_task_manifest(ks_root / "ks")
    rate = ext / sum(u.duration for u in m.utterances())  # extraction seconds per second of audio
    print(f"   d. projected to the real corpora (extraction {rate:.3f} s per s of audio on this machine; SID's "
          f"1,251-speaker classifier costs more per update than the demo's):")
    for task, (cost, recipe) in costs.items():
        trials = len(recipe.lrs(None, True)) * (5 if task == "er" else 1)
        training = cost * recipe.train.steps * trials
        extraction = rate * REAL_HOURS[task] * 3600
        print(f"      {task:<3} {REAL_HOURS[task]:5.0f} h of audio: extraction {extraction / 3600:6.1f} h, training "
              f"{recipe.train.steps} x {trials} trials {training / 3600:5.2f} h, ratio "
              f"{(extraction + training) / extraction:4.2f}x")


def section_7(args: argparse.Namespace, ups: dict, data: Path, home: Path) -> None:
    try:
        import ray
    except ImportError:
        print("\n7. Ray: not installed (pip install 'superbench[ray]'), skipped")
        return
    print("\n7. Ray on this machine's cores: the ER grid on 2 Ray workers vs 1, and where the time goes")
    work = home / "c7"
    over = {"train.steps": args.er_steps, "train.eval_interval": args.er_steps // 3}
    up = ups["hubert-base-random"]
    # the ER grid on cached features: extract once (not timed), then train the grid each way
    timed_run(up, "er", data, work / "warm", profile="superb", overrides={"train.steps": 2, "train.eval_interval": 2},
              shared_cache=True)
    from bench_ray import er_grid_rows

    for line in er_grid_rows(up, data, work, over):
        print("   " + line)
    # extraction: a KS subset with 1 actor vs 2 (cold caches; each actor one thread)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ks = subset(data / "ks", work / "subsets", 384, 48)  # 480 clips: chunks of 64 utterances for the actors
    t1, r1 = timed_run(up, "ks", ks, work / "x1", lr=1e-3, overrides={"steps": 2, "eval_interval": 2},
                       executor="ray", extract_actors=1)
    t2, r2 = timed_run(up, "ks", ks, work / "x2", lr=1e-3, overrides={"steps": 2, "eval_interval": 2},
                       executor="ray", extract_actors=2)
    e1, e2 = r1.wall_time["extraction"], r2.wall_time["extraction"]
    print(f"   b. extraction of {len(load_task_manifest(ks / 'ks').utterances())} KS clips, hubert-base-random: "
          f"1 actor {e1:6.1f} s, 2 actors {e2:6.1f} s  x{e1 / e2:4.2f}  (goal >= 1.6x)")
    ray.shutdown()


def cache_errors(upstream, manifest, cache, n: int = 40) -> tuple[float, float]:
    """Max and mean |cached - float32| over n utterances, relative to max and mean |float32|."""
    import numpy as np
    import torch

    from superbench.audio import load_audio

    worst, total, scale_max, scale_sum, count = 0.0, 0.0, 0.0, 0.0, 0
    for u in manifest.utterances()[:n]:
        with torch.inference_mode():
            hidden, frames = upstream.extract([load_audio(u.audio)])
        exact = torch.stack([h[0, : int(frames[0])] for h in hidden], dim=1).numpy()
        err = np.abs(np.asarray(cache.get(u.id), dtype=np.float32) - exact)
        worst, total = max(worst, float(err.max())), total + float(err.sum())
        scale_max, scale_sum, count = max(scale_max, float(np.abs(exact).max())), \
            scale_sum + float(np.abs(exact).sum()), count + exact.size
    return worst / scale_max, (total / count) / (scale_sum / count)


def section_8(ups: dict, data: Path, home: Path) -> None:
    from superbench.features.keys import audio_keys
    from superbench.features.store import FeatureCache, cache_path

    print("\n8. frame cache as int8 vs fp16 (fbank, fast recipe, demo PR and ASR)")
    up = ups["fbank"]
    for task in ("pr", "asr"):
        m = load_task_manifest(data / task)
        rows = {}
        for dtype in ("fp16", "int8"):
            _, rec = timed_run(up, task, data, home / f"c8-{task}-{dtype}", cache_dtype=dtype)
            cache = FeatureCache.open(cache_path(up.variant(), "frame", home / f"c8-{task}-{dtype}" / "cache",
                                                 rec.features_fingerprint), audio_keys(m))
            rows[dtype] = (rec, cache, cache_errors(up, m, cache))
        (r16, c16, e16), (r8, c8, e8) = rows["fp16"], rows["int8"]
        per16 = r16.wall_time["training"] / (r16.steps * len(r16.trials))
        per8 = r8.wall_time["training"] / (r8.steps * len(r8.trials))
        print(f"   {task}: bytes int8/fp16 {c8.nbytes / c16.nbytes:4.2f}x (goal 0.5x); training per update "
              f"fp16 {per16 * 1e3:5.1f} ms, int8 {per8 * 1e3:5.1f} ms, throughput x{per16 / per8:4.2f} (goal >= 1.0x)")
        print(f"        error vs float32, max/max|x| and mean/mean|x|: fp16 {e16[0]:.2e} / {e16[1]:.2e}, "
              f"int8 {e8[0]:.2e} / {e8[1]:.2e};  test {r16.metric} fp16 {r16.test:.2f}, int8 {r8.test:.2f}")



def section_9(args: argparse.Namespace, ups: dict, ks_small: Path, home: Path) -> None:
    import torch

    from superbench.device import resolve_compute

    compute = resolve_compute(args.device)
    if compute.device.type == "cpu" and args.device == "auto":
        print("\n9. GPU: no CUDA device here, skipped (run `make bench` on a GPU machine, or pass --device cpu)")
        return
    up = ups["hubert-base-random"]
    up.to(compute.device)
    name = compute.describe()
    print(f"\n9. extraction on {name}: throughput vs the bare forward on the same batches, fp32 and bf16 "
          f"(hubert-base-random, KS subset)")
    rows = {}
    for precision in ("fp32", "bf16"):
        c = resolve_compute(str(compute.device), precision)
        bench_throughput(up, ks_small / "ks", home / f"c9-warm-{precision}", 1, c)  # kernels, allocator
        rows[precision] = r = bench_throughput(up, ks_small / "ks", home / f"c9-{precision}", args.repeats, c)
        print(f"   {precision}: bare {r['bare_s']:6.2f} s  extract {r['extract_s']:6.2f} s  ratio {r['ratio']:4.2f}x "
              f"(goal >= 0.9x)  {r['x_realtime']:.0f}x real time")
    from superbench.audio import load_audio

    wav = torch.as_tensor(load_audio(next(iter(load_task_manifest(ks_small / "ks").utterances())).audio))[None]
    with torch.inference_mode():
        exact = torch.stack(up(wav.to(compute.device), torch.tensor([wav.shape[1]]))[0]).float()
        with resolve_compute(str(compute.device), "bf16").autocast():
            low = torch.stack(up(wav.to(compute.device), torch.tensor([wav.shape[1]]))[0]).float()
    err = (low - exact).abs()
    print(f"   bf16 vs fp32: extraction x{rows['fp32']['extract_s'] / rows['bf16']['extract_s']:4.2f} faster; "
          f"error max/max|x| {float(err.max() / exact.abs().max()):.2e}, "
          f"mean/mean|x| {float(err.mean() / exact.abs().mean()):.2e}")
    up.to("cpu")


def sampled_key(path: str, block: int = 64 << 10) -> str:
    """The feature cache's audio key before format v4 (resolved path, size, first and last `block`): the
    reference the full-content key is timed against."""
    import hashlib

    real = os.path.realpath(path)
    with open(real, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 2 * block:
            content = hashlib.sha256(fh.read())
        else:
            content = hashlib.sha256(fh.read(block))
            fh.seek(size - block)
            content.update(fh.read(block))
    h = hashlib.sha256(f"{real}\0{size}\0".encode())
    h.update(content.digest())
    return h.hexdigest()[:32]


def one_manifest(manifests: list, name: str):
    """Every distinct audio file of `manifests` once, as one manifest (ids made unique)."""
    import dataclasses

    by_path: dict = {}
    for m in manifests:
        for u in m.utterances():
            by_path.setdefault(u.audio, dataclasses.replace(u, id=f"{m.task}/{u.id}"))
    return dataclasses.replace(manifests[0], task=name, splits={"all": list(by_path.values())})


def tone_corpus(out: Path, n_files: int, seconds: float) -> object:
    """`n_files` distinct seeded chirps of `seconds` each (16 kHz PCM16), as one manifest."""
    import soundfile as sf

    from superbench.testing import chirp_wavs

    n = int(seconds * 16000)
    rows = []
    (out / "wav").mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        (wav,) = chirp_wavs([n], seed=i)
        sf.write(out / "wav" / f"{i:05d}.wav", wav, 16000, subtype="PCM_16")
        rows.append({"id": f"u{i:05d}", "audio": f"wav/{i:05d}.wav", "sample_rate": 16000, "num_samples": n,
                     "label": "x"})
    write_task_manifest(out, task="ks", corpus="tones", version="1", label_field="label", labels=["x"],
                        splits={"train": rows[:-2], "dev": rows[-2:-1], "test": rows[-1:]})
    return load_task_manifest(out)


def time_keys(manifest, workers: int, repeats: int) -> dict:
    """Median seconds of the sampled and of the full-content key over the manifest's files (warm page cache)."""
    from concurrent.futures import ThreadPoolExecutor

    from superbench.features.keys import audio_keys

    paths = sorted({u.audio for u in manifest.utterances()})

    def sampled() -> None:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            list(pool.map(sampled_key, paths))

    def full() -> None:
        audio_keys(manifest, workers=workers)

    full()  # the page cache holds every file, as after the manifest check of a run
    out = {}
    for name, fn in (("sampled", sampled), ("full", full)):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[name] = statistics.median(times)
    return out


def section_10(args: argparse.Namespace, ups: dict, data: Path, home: Path) -> None:
    import torch

    from superbench.device import torch_threads
    from superbench.features.extraction import extract_features
    from superbench.features.keys import AUDIO_KEY_WORKERS, audio_keys

    print("\n10. audio keys: sampled (path, size, first + last 64 KiB) vs full blake2b vs fbank extraction "
          "(utterance level, 1 torch thread, cold feature cache, warm page cache)")
    corpora = [("demo", lambda: one_manifest([load_task_manifest(p.parent) for p in sorted(data.glob("*/meta.json"))],
                                             "demo")),
               (f"tones {args.key_files} x {args.key_seconds:g} s",
                lambda: tone_corpus(home / "tones10", args.key_files, args.key_seconds))]
    for name, make in corpora:
        manifest = make()
        paths = {u.audio for u in manifest.utterances()}
        mib = sum(os.path.getsize(p) for p in paths) / 2**20
        keys = audio_keys(manifest)  # not timed as extraction: a run keys its audio while planning
        with torch_threads(1):
            t0 = time.perf_counter()
            extract_features(ups["fbank"], manifest, "utterance", root=home / f"c10-{name.split()[0]}",
                             progress=False, keys=keys)
            extract_s = time.perf_counter() - t0
        print(f"   {name}: {len(paths)} files, {mib:.0f} MiB; fbank extraction {extract_s:.2f} s "
              f"({extract_s / mib * 1000:.1f} ms/MiB), torch {torch.__version__}")
        for workers in sorted({1, AUDIO_KEY_WORKERS}):
            t = time_keys(manifest, workers, args.repeats)
            print(f"     {workers} thread(s): sampled {t['sampled']:.3f} s  full {t['full']:.3f} s "
                  f"({t['full'] / mib * 1000:.2f} ms/MiB, {mib / t['full']:.0f} MiB/s)  "
                  f"full / extraction {t['full'] / extract_s:.3f}x (goal <= 0.1x)")


def plan_vs_extraction(upstream, tasks: list, data_root: Path, work: Path, threads: int | None = None
                       ) -> tuple[object, float]:
    """`plan`'s estimate of a cold extraction of `tasks`, then that extraction as `run` does it (every plan's
    `extract`, which is what records log as extraction time), in seconds."""
    from superbench.options import RunOptions
    from superbench.plan import estimate_run
    from superbench.runner import extract, plan_run

    opts = RunOptions.of(results_dir=work / "results", cache_root=work / "cache", checkpoint_root=work / "ckpt",
                         progress=False, profile="fast", extract_threads=threads)
    plans = plan_run(upstream, tasks, data_root, opts)
    estimate = estimate_run(plans, opts)
    return estimate, sum(extract(plan, opts)[1] for plan in plans)


def section_11(args: argparse.Namespace, ups: dict, data: Path, home: Path) -> None:
    from superbench.tasks import get_task, resolve_tasks

    print("\n11. plan's extraction estimate (warmed-up probe) vs the extraction (fbank, cold cache)  goal: 0.67-1.5x")
    big = ks_corpus_of_distinct_clips(data, home / "c11-clips", args.plan_clips)
    for name, tasks, root in (("demo, all tasks", resolve_tasks("all"), data),
                              (f"KS, {args.plan_clips} distinct clips", [get_task("ks")], big)):
        for threads in (None, 1):
            work = home / f"c11-{len(tasks)}-{threads}"
            estimate, actual = plan_vs_extraction(ups["fbank"], tasks, root, work, threads)
            predicted = sum(t.extraction_seconds or 0.0 for t in estimate.tasks)
            hours = sum(t.extract_hours for t in estimate.tasks)
            rates = ", ".join(f"{p.level} {p.rate:.0f} s/s" for p in estimate.probes.values())
            print(f"   {name:<26} {estimate.threads} thr, {hours:5.2f} h to extract: estimate {predicted:6.1f} s, "
                  f"extraction {actual:6.1f} s, ratio {predicted / actual:4.2f}x  (probe: {rates})")


def section_12(args: argparse.Namespace) -> None:
    import numpy as np

    from superbench.uncertainty import UnitScores, confidence_interval, paired_test

    rng = np.random.default_rng(0)

    def units(statistic: str, unit: str, n: int, columns: dict, owner=None) -> UnitScores:
        return UnitScores.build(statistic, unit, [f"{unit}{i}" for i in range(n)], columns, owner=owner)

    labels = rng.integers(0, 2, 37_720)
    queries, docs = 555, 400
    hits = rng.random((queries, docs)) < 0.01
    hits[:, 0] = True
    n_true = hits.sum(axis=1, keepdims=True)
    weights = np.where(hits, 1.0 / n_true, -999.9 / (docs - n_true))
    cases = {
        "accuracy, 10,000 utterances": units("proportion", "utterance", 10_000,
                                             {"correct": (rng.random(10_000) < 0.8).astype(int)}),
        "WER, 2,620 utterances": units("ratio", "utterance", 2_620, {"errors": rng.poisson(2, 2_620),
                                                                     "total": rng.poisson(20, 2_620) + 1}),
        "EER, 37,720 trial pairs": units("eer", "trial pair", 37_720,
                                         {"label": labels, "score": rng.normal(size=37_720) + 2 * labels}),
        "DER, 1,000 recordings x 10 settings": units(
            "min_ratio", "recording", 1_000, {"total": rng.uniform(50, 100, 1_000),
                                              **{f"errors:s{k}": rng.uniform(5, 20, 1_000) for k in range(10)}}),
        f"MTWV, {queries} queries x {docs} documents": units(
            "twv", "query", queries, {"score": (rng.normal(size=(queries, docs)) + 3 * hits).ravel(),
                                      "weight": weights.ravel()}, owner=np.repeat(np.arange(queries), docs)),
    }
    print("\n12. confidence intervals, 1,000 resamples (median of 3)          goals: acc < 1 s, EER/DER < 10 s")
    for name, scored in cases.items():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            interval = confidence_interval([[scored]])
            times.append(time.perf_counter() - start)
        print(f"   {name:<40} {statistics.median(times):6.2f} s   value {scored.value():7.2f} "
              f"[{interval.low:.2f}, {interval.high:.2f}]")
    other = units("proportion", "utterance", 10_000, {"correct": (rng.random(10_000) < 0.79).astype(int)})
    start = time.perf_counter()
    test = paired_test([[cases["accuracy, 10,000 utterances"]]], [[other]])
    print(f"   {'paired test, two accuracies over 10,000':<40} {time.perf_counter() - start:6.2f} s   "
          f"difference {test.delta:+.2f} [{test.low:.2f}, {test.high:.2f}], p {test.p_permutation:.3f}")


def section_13(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from downstreams.stft_mask import MaskObjective, SepRNNHead, STFTConfig
    from superbench.tasks import get_task

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rng = np.random.default_rng(0)
    train = get_task("se").load_recipe("superb").train  # SS's superb schedule is the same (s3prl's total_steps)
    batch, superb_steps = train.batch_size, train.steps
    print(f"\n13. SUPERB-SG SE/SS, superb head (3-layer BLSTM 896, dropout 0.5), batch {batch}, "
          f"{torch.get_num_threads()} thread(s); median of {args.sg_updates} updates")
    print(f"   {'case':<46} {'s/update':>9} {'STFT share':>10} {'frames B/s':>11} {'STFT B/s':>10} "
          f"{f'{superb_steps // 1000}k updates':>13}")
    upstreams = {"fbank (240-d, 10 ms)": (1, 240, 160), "HuBERT Base-sized (13 x 768, 20 ms)": (13, 768, 320)}
    for task, sources, seconds in (("se", 1, args.sg_seconds[0]), ("ss", 2, args.sg_seconds[1])):
        samples = int(seconds * 16000)
        for name, (layers, dim, hop) in upstreams.items():
            stft = STFTConfig(hop=hop)
            objective = MaskObjective(stft, sources, "sisdri", ())
            targets = []
            for b in range(batch):  # the objective reads audio through its cache: fill it, no files
                paths = [f"{task}{b}-{k}.wav" for k in range(sources + 1)]
                for path in paths:
                    objective.audio.items[path] = rng.standard_normal(samples).astype(np.float32) * 0.1
                targets.append({"id": str(b), "mixture": paths[0], "sources": paths[1:]})
            head = SepRNNHead(layers, dim, sources, stft.bins)
            optim = torch.optim.AdamW(head.parameters(), lr=1e-4)
            frames = samples // hop + 1
            feats = torch.randn(layers, batch, frames, dim)
            lengths = torch.full((batch,), frames)
            times, stft_times = [], []
            for step in range(args.sg_updates + 1):
                start = time.perf_counter()
                optim.zero_grad()
                loss = objective.loss(head(feats, lengths), lengths, targets)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
                optim.step()
                took = time.perf_counter() - start
                start = time.perf_counter()
                for t in targets:
                    objective._spectra(t, torch.device("cpu"))
                if step:  # the first update warms up
                    times.append(took)
                    stft_times.append(time.perf_counter() - start)
            per_update = statistics.median(times)
            frames_per_s = 16000 / hop
            cache_bytes = layers * dim * 2 * frames_per_s  # the float16 frame cache
            stft_bytes = (1 + sources) * stft.bins * 8 * frames_per_s  # complex64 mixture + sources
            print(f"   {task + ', ' + f'{seconds:g} s, ' + name:<46} {per_update:9.2f} "
                  f"{statistics.median(stft_times) / per_update:9.1%} {cache_bytes:11,.0f} {stft_bytes:10,.0f} "
                  f"{per_update * superb_steps / 3600:11.1f} h")
    print("   STFTs are computed per update from audio held in memory: caching them would add the 'STFT B/s' column "
          "to the frame cache's bytes to save the 'STFT share' of each update")


#: s3prl's speech_translation superb schedule: updates and batches per update (gradient accumulation).
def _median_update_s(head, optim, loss_of, clip: float, updates: int) -> float:
    """Median wall seconds of one training update (zero_grad, `loss_of()`, backward, gradient clip at `clip`,
    step) over `updates` updates, after one that warms up."""
    import torch

    times = []
    for step in range(updates + 1):
        start = time.perf_counter()
        optim.zero_grad()
        loss_of().backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), clip)
        optim.step()
        if step:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def section_14(args: argparse.Namespace) -> None:
    import torch

    from downstreams.seq2seq import EOS, Seq2SeqHead, Seq2SeqHeadConfig, label_smoothed_nll
    from superbench.tasks import get_task

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)
    train = get_task("st").load_recipe("superb").train
    batch, layers, dim, vocab, chars = train.batch_size, 13, 768, 100, int(args.st_seconds * 16)  # ~16 chars/s
    frames = int(args.st_seconds * 50)  # a 20 ms upstream
    head = Seq2SeqHead(layers, dim, vocab, Seq2SeqHeadConfig())
    optim = torch.optim.Adam(head.parameters(), lr=1e-3)
    feats = torch.randn(layers, batch, frames, dim)
    lengths = torch.full((batch,), frames)
    target = torch.randint(4, vocab, (batch, chars))
    target[:, -1] = EOS
    prev = torch.cat([torch.full((batch, 1), EOS), target[:, :-1]], dim=1)
    per_batch = _median_update_s(head, optim, lambda: label_smoothed_nll(head(feats, lengths).logits(prev), target,
                                                                         0.1), 10.0, args.sg_updates)
    params = sum(p.numel() for p in head.parameters())
    print(f"\n14. SUPERB-SG ST, superb s2t_transformer ({params / 1e6:.1f} M parameters), batch {batch} x "
          f"{args.st_seconds:g} s (HuBERT Base-sized frames, {chars} target characters), "
          f"{torch.get_num_threads()} thread(s); median of {args.sg_updates}")
    print(f"   {per_batch:.2f} s per batch; {train.steps:,} updates x {train.grad_accum} batches: "
          f"{per_batch * train.steps * train.grad_accum / 3600:.0f} h of training (dev/test decoding not included)")


def section_15(args: argparse.Namespace) -> None:
    import torch

    from downstreams.vc import Taco2ARHead
    from recipes.prepare.vcc2020 import TARGETS
    from superbench.tasks import get_task

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    torch.manual_seed(0)
    recipe = get_task("vc").load_recipe("superb")
    cfg, batch, superb_steps = recipe.head, recipe.train.batch_size, recipe.train.steps
    mel_frames = int(args.vc_seconds * cfg.sample_rate / cfg.hop)
    print(f"\n15. SUPERB-SG VC, superb Taco2-AR (hidden {cfg.hidden_dim}, {cfg.sample_rate} Hz mel, hop {cfg.hop}), "
          f"batch {batch} x {args.vc_seconds:g} s ({mel_frames} mel frames), {torch.get_num_threads()} thread(s); "
          f"median of {args.sg_updates}")
    cases = (("fbank (240-d, 10 ms)", 1, 240, 160), ("HuBERT Base-sized (13x768, 20 ms)", 13, 768, 320))
    for name, layers, dim, rate in cases:
        head = Taco2ARHead(layers, dim, cfg, cfg.sample_rate / cfg.hop * rate / 16000)
        optim = torch.optim.AdamW(head.parameters(), lr=1e-4)
        frames = int(args.vc_seconds * 16000 / rate)
        feats = torch.randn(layers, batch, frames, dim)
        lengths = torch.full((batch,), frames)
        target = torch.randn(batch, int(head.output_lengths(lengths)[0]), cfg.n_mels)
        def l1_loss(head=head, feats=feats, lengths=lengths, target=target):
            out = head(feats, lengths)
            return (out.decode(target[:, :out.states.shape[1]]) - target[:, :out.states.shape[1]]).abs().mean()

        per_update = _median_update_s(head, optim, l1_loss, 1.0, args.sg_updates)
        head.eval()
        with torch.no_grad():
            start = time.perf_counter()
            head(feats[:, :1], lengths[:1]).decode(None)
            decode = time.perf_counter() - start
        params = sum(p.numel() for p in head.parameters())
        print(f"   {name}: {params / 1e6:.1f} M parameters, {per_update:.2f} s per update; {superb_steps:,} "
              f"updates x {len(TARGETS)} targets: {per_update * superb_steps * len(TARGETS) / 3600:.1f} h of training; "
              f"autoregressive decoding of one utterance {decode:.2f} s (vocoding and metrics not included)")


if __name__ == "__main__":
    sys.exit(main())
