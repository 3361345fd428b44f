"""Built-in upstreams: one class (or factory) per family, found through the `superbench.upstreams` entry points.

`FAMILY` (name -> factory `(path=None, **kw) -> Upstream`) collects the built-in names;
s3prl hub models are the parametrised family `s3prl:HUBNAME` (`upstreams.s3prl_hub`).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    # Built on first use (PEP 562), so importing one upstream module does not import them all.
    if name == "FAMILY":
        from upstreams import filterbank, hf

        return {**filterbank.FACTORIES, **hf.FACTORIES}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
