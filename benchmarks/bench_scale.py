"""Scale benchmark (`make bench-scale`): every stage of a run at 1x, 4x and 16x of a corpus size.

For SID (VoxCeleb1 layout), PR (LibriSpeech layout, frame-level fbank cache) and KS (Speech Commands
layout), a corpus is synthesised (`superbench data synth`) at each scale and every stage runs in its own
subprocess, so each stage's peak RSS is its own (`os.wait4`'s ru_maxrss):

  prepare      the real preparer (`superbench data prepare LAYOUT`)
  load         manifest load + the task's checks (`load_task_manifest`, `Task.check_manifest`)  goal < 10 s at 148k rows
  plan         `superbench plan` (manifest, audio keys, the probe) and its extraction estimate  goal within 1.5x
  extract      the extraction into an empty cache (fbank, one thread)
  train        training per update (fast profile, `--train-steps` updates, one lr), cache warm
  record       what the run does after training: selection, artefacts, the record itself
  leaderboard  `leaderboard import` of the records so far + the table

For each stage: wall seconds and peak RSS per scale, and the growth exponent b of wall ~ size^b between
the smallest and the largest scale (1 = linear). Peak RSS is also shown above `idle`, a subprocess that
imports what the stages import and does nothing: what the stage itself holds. Goals: b <= 1.1 for every
stage; the RSS above idle at 16x <= 1.2x the one at 1x outside the data a stage must hold (the manifest's
rows in load/plan, the resident pooled features in train; printed beside the table).

The default sizes make 16x the real corpora (VoxCeleb1 148,642 utterances, LibriSpeech train-clean-100
28,539, Speech Commands 51,088); `--base` and `--seconds` scale them down where disk or time are short,
`--max-scale` drops the larger scales. A benchmark, not a test: it prints numbers and never fails on them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: task -> (layout, the preparer's task folder, default 1x utterances (the real size / 16), seconds each).
TASKS = {"sid": ("voxceleb1", 9290, 1.5), "pr": ("librispeech", 1784, 12.7), "ks": ("speech_commands", 3193, 1.0)}
STAGES = ("prepare", "load", "plan", "extract", "train", "record", "leaderboard")


# --------------------------------------------------------------------------- the stages (run in a child)

def _opts(work: Path, steps: int):
    from superbench.options import RunOptions

    return RunOptions.of(results_dir=work / "results", cache_root=work / "cache", checkpoint_root=work / "ckpt",
                         progress=False, profile="fast", lr_sweep=False, extract_threads=1, train_threads=1,
                         overrides={"train.steps": steps, "train.eval_interval": max(1, steps // 2)})


def _plans(task: str, data: Path, work: Path, steps: int):
    from superbench.runner import plan_run
    from superbench.tasks import get_task
    from superbench.upstream import load_upstream

    opts = _opts(work, steps)
    return plan_run(load_upstream("fbank"), [get_task(task)], data, opts), opts


def child(stage: str, task: str, corpus: Path, data: Path, work: Path, steps: int) -> dict:
    """One stage; returns its numbers (wall: the stage's own work, imports excluded)."""
    import torch

    torch.set_num_threads(1)
    from superbench.manifest import load_task_manifest
    from superbench.tasks import get_task

    layout = TASKS[task][0]
    out: dict = {}
    start = time.perf_counter()
    if stage == "idle":
        from superbench import plan, runner  # noqa: F401 (what the other stages import)
    elif stage == "prepare":
        from superbench.preparers import PREPARERS, PrepareRequest

        PREPARERS.get(layout).prepare(PrepareRequest(str(corpus), data))
    elif stage == "load":
        manifest = load_task_manifest(data / task)
        get_task(task).check_manifest(manifest)
        out["rows"] = sum(len(rows) for rows in manifest.splits.values())
    elif stage == "plan":
        from superbench.plan import estimate_run

        plans, opts = _plans(task, data, work, steps)
        est = estimate_run(plans, opts)
        out["estimate"] = sum(t.extraction_seconds or 0.0 for t in est.tasks)
        out["hours"] = sum(t.extract_hours for t in est.tasks)
    elif stage == "extract":
        from superbench.runner import extract

        plans, opts = _plans(task, data, work, steps)
        start = time.perf_counter()
        extract(plans[0], opts)
    elif stage in ("train", "record"):
        from superbench.runner import execute, extract

        plans, opts = _plans(task, data, work, steps)
        source, _ = extract(plans[0], opts)  # cached by the extract stage
        start = time.perf_counter()
        records = execute(plans[0], opts, (source, 0.0))
        total = time.perf_counter() - start
        training = sum(r.wall_time["training"] for r in records)
        out["per_update"] = training / steps
        out["record"] = total - training
    elif stage == "leaderboard":
        from superbench.cli import main

        db = work / "leaderboard.db"
        if main(["leaderboard", "import", str(work / "results"), "--db", str(db)]) != 0:
            raise RuntimeError("leaderboard import failed")
        if main(["leaderboard", "--db", str(db)]) != 0:
            raise RuntimeError("leaderboard table failed")
    else:
        raise ValueError(stage)
    out["wall"] = time.perf_counter() - start
    return out


def run_stage(stage: str, task: str, corpus: Path, data: Path, work: Path, steps: int) -> dict:
    """`child` in a fresh interpreter; its numbers plus its peak RSS (bytes)."""
    cmd = [sys.executable, __file__, "--child", stage, "--task", task, "--corpus", str(corpus), "--data", str(data),
           "--work", str(work), "--train-steps", str(steps)]
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONHASHSEED": "0"})
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith("{\"stage\"")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stage {stage} ({task}) failed with exit code {proc.returncode}: {' '.join(cmd)}")
    numbers = json.loads(lines[-1])
    numbers["rss"] = usage.ru_maxrss * 1024
    return numbers


# --------------------------------------------------------------------------- the table

def exponent(sizes: list[int], values: list[float]) -> float | None:
    """b of value ~ size^b between the smallest and the largest size (None when it cannot be told)."""
    if len(sizes) < 2 or min(values[0], values[-1]) <= 0:
        return None
    return math.log(values[-1] / values[0]) / math.log(sizes[-1] / sizes[0])


def _mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:.0f}"


def bench_task(task: str, args: argparse.Namespace, work_root: Path) -> dict:
    from recipes.prepare.synth import SynthSpec, synthesize

    layout, default_base, default_seconds = TASKS[task]
    base = args.base.get(task, default_base)
    seconds = args.seconds.get(task, default_seconds)
    rows: dict[int, dict[str, dict]] = {}
    for scale in [s for s in (1, 4, 16) if s <= args.max_scale]:
        n = base * scale
        work = work_root / f"{task}-{scale}x"
        corpus, data = work / "corpus", work / "data"
        start = time.perf_counter()
        done = synthesize(SynthSpec(layout, n, hours=n * seconds / 3600, seed=scale), corpus,
                          progress=args.progress)
        synth = time.perf_counter() - start
        stages = {"idle": run_stage("idle", task, corpus, data, work, args.train_steps)}
        for stage in ("prepare", "load", "plan", "extract", "train", "leaderboard"):
            stages[stage] = run_stage(stage, task, corpus, data, work, args.train_steps)
        stages["record"] = {"wall": stages["train"]["record"], "rss": stages["train"]["rss"]}
        stages["train"] = {**stages["train"], "wall": stages["train"]["per_update"]}
        cache = sum(p.stat().st_size for p in (work / "cache").rglob("*") if p.is_file())
        rows[n] = {"stages": stages, "synth": synth, "hours": done.seconds / 3600, "audio_bytes": done.bytes,
                   "cache_bytes": cache}
        print(f"{task} {scale}x: {n} utterances, {done.seconds / 3600:.1f} h, audio {_mb(done.bytes)} MiB "
              f"(synthesised in {synth:.0f} s), cache {_mb(cache)} MiB; "
              + ", ".join(f"{s} {v['wall']:.3g} s" for s, v in stages.items() if s != "idle"), flush=True)
        if not args.keep:
            shutil.rmtree(corpus)
            shutil.rmtree(work / "cache", ignore_errors=True)
    return rows


def print_table(task: str, rows: dict) -> None:
    sizes = sorted(rows)
    print(f"\n{task}: utterances {' / '.join(map(str, sizes))}")
    print(f"{'stage':<12} " + " ".join(f"{'wall ' + str(n):>12}" for n in sizes) + f" {'b':>6} "
          + " ".join(f"{'RSS MiB ' + str(n):>14}" for n in sizes) + f" {'above idle x':>12}")
    for stage in ("idle",) + STAGES:
        walls = [rows[n]["stages"][stage]["wall"] for n in sizes]
        rss = [rows[n]["stages"][stage]["rss"] for n in sizes]
        idle = [rows[n]["stages"]["idle"]["rss"] for n in sizes]
        b = exponent(sizes, walls)
        above = [r - i for r, i in zip(rss, idle)]
        ratio = f"{above[-1] / above[0]:.2f}" if stage != "idle" and above[0] > 0 else "-"
        unit = " /upd" if stage == "train" else ""
        print(f"{stage + unit:<12} " + " ".join(f"{w:>12.3g}" for w in walls)
              + f" {'-' if b is None or stage == 'idle' else f'{b:.2f}':>6} "
              + " ".join(f"{_mb(r):>14}" for r in rss) + f" {ratio:>12}")
    plan = [(rows[n]["stages"]["plan"]["estimate"], rows[n]["stages"]["extract"]["wall"]) for n in sizes]
    print("plan estimate / measured extraction: " + ", ".join(f"{e:.1f} s / {m:.1f} s = {e / m:.2f}x"
                                                              for e, m in plan))
    print("data held: cache " + ", ".join(f"{_mb(rows[n]['cache_bytes'])} MiB" for n in sizes)
          + "; manifest rows " + ", ".join(str(rows[n]["stages"]["load"]["rows"]) for n in sizes))


def _sizes(items: list[str], kind) -> dict:
    out = {}
    for item in items:
        task, _, value = item.partition("=")
        if task not in TASKS or not value:
            raise SystemExit(f"expected TASK=VALUE with TASK one of {', '.join(TASKS)}, got {item!r}")
        out[task] = kind(value)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="sid,pr,ks", help="comma list of sid, pr, ks (default: all three)")
    ap.add_argument("--base", action="append", default=[], metavar="TASK=N",
                    help="utterances at 1x (default: the real corpus / 16: sid 9290, pr 1784, ks 3193)")
    ap.add_argument("--seconds", action="append", default=[], metavar="TASK=S",
                    help="mean seconds per utterance (default: sid 1.5, pr 12.7, ks 1 (fixed))")
    ap.add_argument("--max-scale", type=int, default=16, choices=(1, 4, 16), help="largest scale to run")
    ap.add_argument("--train-steps", type=int, default=40, help="updates timed in the train stage")
    ap.add_argument("--work", type=Path, default=None, help="where corpora go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep corpora and caches")
    ap.add_argument("--progress", action="store_true", help="progress bars of the synthesis")
    ap.add_argument("--child", choices=("idle",) + STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--task", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        numbers = child(args.child, args.task, args.corpus, args.data, args.work, args.train_steps)
        print(json.dumps({"stage": args.child, **numbers}), flush=True)
        return 0
    args.base, args.seconds = _sizes(args.base, int), _sizes(args.seconds, float)
    load = os.getloadavg()
    print(f"bench-scale on {os.cpu_count()} CPU(s), load {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}", flush=True)
    work_root = Path(args.work or tempfile.mkdtemp(prefix="superbench-scale-"))
    work_root.mkdir(parents=True, exist_ok=True)
    os.environ["SUPERBENCH_HOME"] = str(work_root / "home")
    start = time.perf_counter()
    try:
        results = {task: bench_task(task, args, work_root) for task in args.tasks.split(",")}
    finally:
        if not args.keep and args.work is None:
            shutil.rmtree(work_root, ignore_errors=True)
    for task, rows in results.items():
        print_table(task, rows)
    load = os.getloadavg()
    print(f"\ntotal {time.perf_counter() - start:.0f} s; load at the end {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
