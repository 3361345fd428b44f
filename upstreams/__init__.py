"""Built-in upstreams: one class (or factory) per family, found through the `superbench.upstreams` entry points.

`FAMILY` (name -> factory `(path=None, **kw) -> Upstream`) collects the built-in names;
s3prl hub models are the parametrised family `s3prl:HUBNAME` (`upstreams.s3prl_hub`).
The classic self-supervised families (APC, VQ-APC, NPC, Mockingjay, TERA, modified CPC, wav2vec,
vq-wav2vec, DistilHuBERT) are native (torch only) and read their published checkpoint files
(`upstreams.ssl_checkpoint`); their names are s3prl's hub names.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Modules with a `FACTORIES` mapping, in the order `superbench upstreams list` shows them.
FAMILY_MODULES = ("filterbank", "hf", "apc", "npc", "mockingjay", "cpc", "wav2vec", "distilhubert", "pretrain")


def __getattr__(name: str) -> Any:
    # Built on first use (PEP 562), so importing one upstream module does not import them all.
    if name == "FAMILY":
        family: dict[str, Any] = {}
        for module in FAMILY_MODULES:
            factories = importlib.import_module(f"upstreams.{module}").FACTORIES
            clash = sorted(set(family) & set(factories))
            if clash:
                raise RuntimeError(f"upstreams.{module} registers names already taken: {', '.join(clash)}")
            family.update(factories)
        return family
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
