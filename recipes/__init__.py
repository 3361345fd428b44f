"""Versioned task recipes: every hyper-parameter of a run, in `recipes/<task>.yaml`.

A recipe has a `version` (recorded in each result, so numbers from different
recipes are never mixed silently), the SUPERB reference it follows, the documented
deviations, and named profiles: `superb` (the s3prl configuration) and `fast`
(a shrunken schedule for the demo corpus and CI). `load_recipe(task, profile)`
returns one profile's settings merged with the recipe header, validated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RECIPE_DIR = Path(__file__).resolve().parent
HEADER_KEYS = {"version", "task", "reference", "deviations", "profiles"}
#: Keys a profile may set; required ones have no default here.
PROFILE_KEYS: dict[str, Any] = {
    "steps": None, "batch_size": None, "lr": None, "eval_interval": None,
    "lr_grid": [], "proj_dim": 256, "rnn_dims": [], "dropout": 0.0, "grad_clip": 1.0, "grad_accum": 1,
    "balanced_sampling": False, "eval_batch_size": 32, "description": "", "filterbank_cmvn": True,
    "frame_stack": 1,
}


class RecipeError(ValueError):
    """A recipe file is missing, malformed, or asked for something it does not define."""


def recipe_path(task: str) -> Path:
    return RECIPE_DIR / f"{task}.yaml"


def available_profiles(task: str) -> list[str]:
    return list(_read(task)["profiles"])


def _read(task: str) -> dict[str, Any]:
    path = recipe_path(task)
    if not path.is_file():
        known = sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))
        raise RecipeError(f"no recipe for task {task!r} ({path} missing); recipes exist for: {', '.join(known)}")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    unknown = sorted(set(data) - HEADER_KEYS)
    if unknown:
        raise RecipeError(f"{path}: unknown top-level key(s) {unknown}; allowed: {sorted(HEADER_KEYS)}")
    for key in ("version", "profiles"):
        if key not in data:
            raise RecipeError(f"{path}: missing {key!r}")
    if data.get("task", task) != task:
        raise RecipeError(f"{path}: declares task {data['task']!r}, expected {task!r}")
    return data


def load_recipe(task: str, profile: str = "superb") -> dict[str, Any]:
    """One profile of a task's recipe as a flat dict (with `version`, `task`, `profile`)."""
    data = _read(task)
    path = recipe_path(task)
    profiles = data["profiles"]
    if profile not in profiles:
        raise RecipeError(f"{path}: no profile {profile!r}; available: {', '.join(profiles)}")
    settings = profiles[profile] or {}
    unknown = sorted(set(settings) - set(PROFILE_KEYS))
    if unknown:
        raise RecipeError(f"{path}: profile {profile!r} has unknown key(s) {unknown}; "
                          f"allowed: {sorted(PROFILE_KEYS)}")
    missing = sorted(k for k, v in PROFILE_KEYS.items() if v is None and k not in settings)
    if missing:
        raise RecipeError(f"{path}: profile {profile!r} is missing required key(s) {missing}")
    out = {k: v for k, v in PROFILE_KEYS.items() if v is not None}
    out.update(settings)
    for key in ("steps", "batch_size", "eval_interval", "grad_accum", "proj_dim", "eval_batch_size", "frame_stack"):
        if not isinstance(out[key], int) or out[key] < 1:
            raise RecipeError(f"{path}: profile {profile!r}: {key} must be a positive integer, got {out[key]!r}")
    for key in ("lr",):
        out[key] = float(out[key])
        if not out[key] > 0:
            raise RecipeError(f"{path}: profile {profile!r}: lr must be > 0")
    out["lr_grid"] = [float(x) for x in out["lr_grid"]]
    if any(x <= 0 for x in out["lr_grid"]):
        raise RecipeError(f"{path}: profile {profile!r}: lr_grid values must be > 0")
    out.update(version=str(data["version"]), task=task, profile=profile,
               reference=data.get("reference", ""), deviations=list(data.get("deviations", [])))
    return out
