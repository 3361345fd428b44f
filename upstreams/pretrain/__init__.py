"""`superbench pretrain`: the field's self-supervised families, trained small, saved as upstreams.

Each family is one module here declaring a `PretrainFamily` (`base.py`): its model, its objective and
the upstream format it saves in. They share one loop (`loop.py`) and one data source (`data.py`).

| family    | kind           | objective                                             | saved as (loader)   |
|-----------|----------------|-------------------------------------------------------|---------------------|
| apc       | generative     | predict the log-mel frame n steps ahead (L1)          | s3prl APC .ckpt     |
| tera      | generative     | reconstruct time/frequency-masked log-mel (L1)        | s3prl TERA .ckpt    |
| hubert    | predictive     | masked prediction of k-means units of MFCC            | transformers HuBERT |
| best-rq   | predictive     | masked prediction of random-projection-quantised mels | see its module      |
| wav2vec2  | contrastive    | InfoNCE against quantised targets + diversity         | transformers w2v2   |
| data2vec  | bootstrapping  | regress an EMA teacher's averaged top layers          | transformers d2v    |
| vicreg    | regularization | variance / invariance / covariance on two views       | see its module      |
"""

from __future__ import annotations

import difflib
import importlib
import json
from pathlib import Path
from typing import Any

from superbench.upstream import UpstreamFactory, UpstreamInfo
from upstreams.pretrain.base import PretrainFamily

#: family name -> module under `upstreams.pretrain` (imported on first use).
FAMILY_MODULES = {"apc": "apc", "tera": "tera", "hubert": "hubert", "best-rq": "best_rq",
                  "wav2vec2": "wav2vec2", "data2vec": "data2vec", "vicreg": "vicreg"}


def family_names() -> list[str]:
    return list(FAMILY_MODULES)


def get_family(name: str) -> PretrainFamily:
    """The family called `name`, or a ValueError with the closest name."""
    if name not in FAMILY_MODULES:
        close = difflib.get_close_matches(name, FAMILY_MODULES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown pretraining family {name!r}{hint} (families: {', '.join(FAMILY_MODULES)})")
    return importlib.import_module(f"upstreams.pretrain.{FAMILY_MODULES[name]}").FAMILY


def read_pretrain_info(folder: str | Path, family: str | None = None) -> dict[str, Any]:
    """The pretrain.json of a `superbench pretrain --out` folder (checked to be `family`'s when given)."""
    info_file = Path(folder).expanduser() / "pretrain.json"
    what = f"`superbench pretrain {family or 'FAMILY'}`"
    if not info_file.is_file():
        raise FileNotFoundError(f"{folder} has no pretrain.json; expected the --out folder of {what}")
    info = json.loads(info_file.read_text())
    if family is not None and info.get("family") != family:
        raise ValueError(f"{folder} holds a {info.get('family')!r} model, not {family!r}")
    return info


def load_pretrained(folder: str | Path, family: str | None = None, **kwargs: Any):
    """The upstream a pretrain folder holds, through its family's loader, named `<family>-trained` or
    `<family>-random-init` (0 steps) so a trained model and its initialisation are told apart everywhere."""
    from upstreams import FAMILY

    info = read_pretrain_info(folder, family)
    upstream = FAMILY[info["loader"]](path=str(Path(folder).expanduser()), **kwargs)
    upstream.name = f"{info['family']}-{'trained' if info.get('steps') else 'random-init'}"
    return upstream


def _pretrained(folder: str, path: str | None = None, **kwargs: Any):
    """`pretrained:DIR`: whatever `superbench pretrain` wrote into DIR."""
    if path is not None:
        raise ValueError("pretrained:DIR takes the folder after the colon, not as a path")
    return load_pretrained(folder, **kwargs)


_pretrained_factory = UpstreamFactory(_pretrained, UpstreamInfo(
    family="pretrain (any)", layers="per model", hidden_size="per model",
    source="pretrained:DIR (a `superbench pretrain --out DIR` folder)",
    description="a self-trained model of any family"))


def _alias_factory(family: str) -> UpstreamFactory:
    """`FAMILY=DIR` for a family whose name is not an upstream's: read DIR/pretrain.json, load with its loader."""

    def build(path: str | None = None, **kwargs: Any):
        if path is None:
            raise FileNotFoundError(f"upstream {family!r} has no published weights: train one with "
                                    f"`superbench pretrain {family} --data demo --out DIR` and pass {family}=DIR")
        return load_pretrained(path, family, **kwargs)

    return UpstreamFactory(build, UpstreamInfo(
        family=f"pretrain ({family})", layers="per model", hidden_size="per model",
        source=f"superbench pretrain {family} --out DIR; then {family}=DIR",
        description=f"a self-trained {family} model"), name=family.replace("-", "_"))


#: Upstream names for the families whose name is no loader's own (`best-rq=DIR`, `vicreg=DIR`).
FACTORIES = {**{name: _alias_factory(name) for name in ("best-rq", "vicreg")}, "pretrained": _pretrained_factory}
