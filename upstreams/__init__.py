"""Built-in upstreams. Importing this package registers them with `superbench.upstream.UPSTREAMS`.

Each module registers factories `(path=None, **kw) -> Upstream` by name; s3prl hub models are
reached with the `s3prl:NAME` spec instead (see `upstreams.s3prl_hub`).
"""

from upstreams import filterbank, hf  # noqa: F401  (import registers)

__all__ = ["filterbank", "hf"]
