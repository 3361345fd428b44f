"""superbench: benchmark frozen self-supervised speech models the SUPERB way."""

from superbench.torchaudio_compat import guard_broken_torchaudio

__version__ = "0.1.0"

# Before anything imports transformers: a torchaudio that is installed but cannot load (PyPI's
# build beside a CPU-only torch) must not take the transformers upstreams down with it.
guard_broken_torchaudio()
