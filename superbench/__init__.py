"""superbench: benchmark frozen self-supervised speech models the SUPERB way."""

__version__ = "0.1.0"
