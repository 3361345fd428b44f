"""The one identity of a run (`RunKey`) and the path components made from it.

A record is one (upstream weights, task, data, recipe version, profile, layer, seed) measurement.
`RunKey` is that identity, defined once: it alone decides the record's path, the store's primary
key, whether a run is already done, and the checkpoint folder of an unfinished run, so a score can
never come back for another model, profile or corpus.

Layout (like MTEB's model / revision / experiment):

    <results>/<upstream>/<upstream fingerprint>/<profile>-r<recipe version>/<task>[-layerK]-data<fp>-seed<N>.json
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

#: Longest path component a record path gets (file systems allow 255 bytes; room for a hash suffix).
MAX_COMPONENT = 96


def safe_component(name: str) -> str:
    """One path component made from data (a name, a fingerprint, a profile): never a path of its own.

    Characters other than letters, digits, '-', '_' and '.' become '_' (so '/' can never split it).
    A component that is still not a plain token after that (empty, '.', '..', or starting with '.',
    i.e. hidden) or that is too long gets a short hash of the original appended, so it can neither
    escape the results folder nor collide with another value. Plain values keep their old spelling.
    """
    name = str(name)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if safe and not safe.startswith(".") and len(safe) <= MAX_COMPONENT:
        return safe
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"_{safe.lstrip('.')[:MAX_COMPONENT]}-{digest}"


@dataclass(frozen=True)
class RunKey:
    """What makes two results the same measurement; any difference is another run.

    `data` is the manifest fingerprint (rows and labels: another corpus or a relabelled one
    is another run); `profile` carries the digest of any recipe overrides ("fast+1a2b3c4d").
    """

    upstream: str
    upstream_fingerprint: str
    task: str
    data: str
    recipe_version: str
    profile: str
    layer: int | str | None
    seed: int

    FIELDS = ("upstream", "upstream_fingerprint", "task", "data", "recipe_version", "profile", "layer", "seed")

    def as_tuple(self) -> tuple[str, str, str, str, str, str, str, int]:
        """The store's primary key (layer as text, '' for the weighted sum)."""
        return (self.upstream, self.upstream_fingerprint, self.task, self.data, self.recipe_version,
                self.profile, "" if self.layer is None else str(self.layer), int(self.seed))

    def relpath(self) -> Path:
        """Where the record lives under a results folder."""
        layer = "" if self.layer is None else f"-layer{safe_component(str(self.layer))}"
        data = str(self.data or "")[:12] or "unknown"
        return (Path(safe_component(self.upstream)) / safe_component(self.upstream_fingerprint or "unknown")
                / safe_component(f"{self.profile}-r{self.recipe_version}")
                / f"{safe_component(self.task)}{layer}-data{safe_component(data)}-seed{int(self.seed)}.json")

    def digest(self) -> str:
        """Short hash of the whole key: names the checkpoint folder of the unfinished run."""
        return hashlib.sha256(json.dumps(self.as_tuple()).encode()).hexdigest()[:16]

    def describe(self) -> str:
        layer = "" if self.layer is None else f" layer {self.layer}"
        return (f"{self.upstream}@{self.upstream_fingerprint[:8]} {self.task}{layer} seed {self.seed} "
                f"(data {self.data[:8]}, {self.profile} r{self.recipe_version})")
