"""Built-in upstreams: one module (or package) per family, found by discovery, registered through the
`superbench.upstreams` entry point.

Every module here that declares `FACTORIES` (name -> `superbench.upstream.UpstreamFactory`, whose
`info` is what `superbench upstreams list` shows) is a family: adding an upstream is adding its module.
`FAMILY` collects them all, module by module in name order (the listing sorts by name anyway);
a name claimed by two modules is an error. s3prl hub models are the parametrised family `s3prl:HUBNAME`
(`upstreams.s3prl_hub`, its own entry point). The classic self-supervised families (APC, VQ-APC, NPC,
Mockingjay, TERA, modified CPC, wav2vec, vq-wav2vec, DistilHuBERT) are native (torch only) and read their
published checkpoint files (`upstreams.ssl_checkpoint`); their names are s3prl's hub names.
"""

from __future__ import annotations

from typing import Any

from superbench.registry import declared_in


def _builtin_upstreams() -> dict[str, Any]:
    family: dict[str, Any] = {}
    for module, factories in declared_in(__name__, __path__, "FACTORIES"):  # ssl_checkpoint etc. are helpers
        clash = sorted(set(family) & set(factories))
        if clash:
            raise RuntimeError(f"{module} registers names already taken: {', '.join(clash)}")
        family.update(factories)
    return family


def __getattr__(name: str) -> Any:
    # Built on first use (PEP 562), so importing one upstream module does not import them all.
    if name == "FAMILY":
        return _builtin_upstreams()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
