"""Feature-cache benchmark (`make bench`): does caching the frozen upstream pay off?

Runs on the demo corpus (built on first use) with `hubert-base-random` (base-sized,
random init: same compute as HuBERT Base, no download) and `fbank`, and prints:

  1. time-to-score, cached vs --no-cache, same number of updates (KS subset)   goal >= 10x
  2. total time-to-score / one extraction pass (KS, fast recipe incl. lr sweep) goal <= 1.3x
  3. extraction throughput vs the bare upstream forward on the same batches    goal >= 0.9x
  4. peak RSS and cache bytes per utterance as the PR corpus grows x4          goal: flat
  5. torch threads: extraction and head training with 1 vs 2 threads           picks the CLI defaults

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


def timed_run(upstream, task: str, data_root: Path, work: Path, **opts) -> tuple[float, object]:
    from superbench.runner import RunOptions, run_task
    from superbench.tasks import get_task

    o = RunOptions(results_dir=work / "results", progress=False, cache_root=work / "cache", profile="fast",
                   overwrite=True, **opts)
    t0 = time.perf_counter()
    (rec,) = run_task(upstream, get_task(task), data_root, o)
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


def bench_throughput(upstream, task_dir: Path, work: Path, repeats: int) -> dict:
    """extract_features vs a bare loop of upstream forwards over the same (pre-loaded) batches."""
    import torch

    from superbench.audio import load_audio
    from superbench.cache import DEFAULT_BATCH_SAMPLES, DEFAULT_CHUNK_BYTES, extract_features, plan_chunks
    from superbench.upstream import pad_batch

    m = load_task_manifest(task_dir)
    utts = {u.id: u for u in m.utterances()}
    batches = [b for c in plan_chunks(upstream, list(utts.values()), "utterance", DEFAULT_BATCH_SAMPLES,
                                      DEFAULT_CHUNK_BYTES) for b in c]
    wavs = {uid: load_audio(u.audio) for uid, u in utts.items()}
    bare, full = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                upstream(*pad_batch([wavs[i] for i in b]))
        bare.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        extract_features(upstream, m, "utterance", root=work / f"tp{r}", progress=False)
        full.append(time.perf_counter() - t0)
    b, f = statistics.median(bare), statistics.median(full)
    seconds = sum(u.duration for u in utts.values())
    return {"bare_s": b, "extract_s": f, "ratio": b / f, "audio_s": seconds, "x_realtime": seconds / f}


_RSS_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
from superbench.runner import RunOptions, run_task
from superbench.tasks import get_task
from superbench.upstream import load_upstream
from pathlib import Path
up = load_upstream({upstream!r})
o = RunOptions(results_dir=Path({work!r}) / "results", progress=False, cache_root=Path({work!r}) / "cache",
               profile="fast", overwrite=True, lr=1e-2, overrides={{"steps": 50, "eval_interval": 50}})
(rec,) = run_task(up, get_task("pr"), Path({data!r}), o)
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
    ap.add_argument("--only", type=int, choices=range(1, 6), action="append", metavar="N",
                    help="run only section N (repeatable); default: all five")
    args = ap.parse_args()
    sections = set(args.only or range(1, 6))
    logging.basicConfig(level=logging.WARNING)
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


if __name__ == "__main__":
    sys.exit(main())
