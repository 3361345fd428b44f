"""The native SSL upstreams as a user meets them: listed, found on disk, written at random, refused clearly."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from superbench.cli import main
from upstreams import apc, cpc, distilhubert, mockingjay, npc, ssl_checkpoint, wav2vec
from upstreams.ssl_checkpoint import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    PublishedCheckpoint,
    read_checkpoint,
    resolve_checkpoint,
)

NATIVE = ("apc", "vq_apc", "npc", "mockingjay", "tera", "modified_cpc", "wav2vec", "vq_wav2vec", "distilhubert")
#: family module name -> its FACTORIES (published name -> factory)
FAMILIES = {m.__name__.split(".")[-1]: m.FACTORIES for m in (apc, npc, mockingjay, cpc, wav2vec, distilhubert)}
FACTORIES = {name: factory for factories in FAMILIES.values() for name, factory in factories.items()}
#: published name -> (layers, hidden size, end of the download URL), as s3prl's hub has them
APC_SERIES = "huggingface.co/leo19941227/apc_series/resolve/main/"
CONVERTED = "huggingface.co/s3prl/converted_ckpts/resolve/main/"
PUBLISHED = {
    "apc": (3, 512, APC_SERIES + "apc_360hr.ckpt"),
    "apc_360hr": (3, 512, APC_SERIES + "apc_360hr.ckpt"),
    "apc_960hr": (3, 512, APC_SERIES + "apc_960hr.ckpt"),
    "vq_apc": (3, 512, APC_SERIES + "vq_apc_360hr.ckpt"),
    "vq_apc_360hr": (3, 512, APC_SERIES + "vq_apc_360hr.ckpt"),
    "vq_apc_960hr": (3, 512, APC_SERIES + "vq_apc_960hr.ckpt"),
    "npc": (9, 512, APC_SERIES + "npc_360hr.ckpt"),
    "npc_360hr": (9, 512, APC_SERIES + "npc_360hr.ckpt"),
    "npc_960hr": (9, 512, APC_SERIES + "npc_960hr.ckpt"),
    "mockingjay": (13, 768, "huggingface.co/s3prl/mockingjay/resolve/main/"
                            "mockingjay_logMelLinearLarge_T_AdamW_b32_500k_360hr_drop1/states-500000.ckpt"),
    "tera": (4, 768, "huggingface.co/s3prl/tera/resolve/main/"
                     "tera_logMelBase_T_F_M_AdamW_b32_1m_960hr_drop1/states-1000000.ckpt"),
    "modified_cpc": (2, 256, "dl.fbaipublicfiles.com/librilight/CPC_checkpoints/60k_epoch4-d0f474de.pt"),
    "wav2vec": (13, 512, CONVERTED + "wav2vec_large.pt"),
    "wav2vec_large": (13, 512, CONVERTED + "wav2vec_large.pt"),
    "vq_wav2vec": (13, 512, CONVERTED + "vq-wav2vec.pt"),
    "vq_wav2vec_gumbel": (13, 512, CONVERTED + "vq-wav2vec.pt"),
    "vq_wav2vec_kmeans": (13, 512, CONVERTED + "vq-wav2vec_kmeans.pt"),
    "distilhubert": (6, 768, "huggingface.co/leo19941227/distilhubert/resolve/main/distilhubert_ls960_4-8-12.ckpt"),
}
PUB = PublishedCheckpoint("apc", "https://example.org/models/apc_360hr.ckpt", "s3prl .ckpt", "APC")


def test_every_family_is_listed_with_its_published_source(capsys):
    assert main(["upstreams", "list"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line and not line.startswith(("-", "name"))}
    for name in NATIVE:
        assert name in rows, name
        assert "https://" in rows[name]  # where the published file is
    assert "pretrained" in rows and "best-rq" in rows and "vicreg" in rows


def test_random_checkpoint_then_validate_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "apc.ckpt"
    assert main(["upstreams", "random-checkpoint", "apc", "--out", str(out)]) == 0
    assert out.is_file() and set(torch.load(out, weights_only=True)) == {"config", "model"}
    assert main(["upstreams", "validate", f"apc={out}"]) == 0
    assert "10/10 checks passed" in capsys.readouterr().out


def test_random_checkpoint_refuses_names_without_a_published_format(caplog):
    assert main(["upstreams", "random-checkpoint", "terra", "--out", "x.ckpt"]) == 2
    assert "did you mean 'tera'" in caplog.text


def test_lookup_order_env_folder_then_s3prl_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(ssl_checkpoint, "S3PRL_CACHE", tmp_path / "s3prl")
    monkeypatch.delenv(ssl_checkpoint.CHECKPOINT_DIR_ENV, raising=False)
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint found .*curl -L -o apc_360hr\.ckpt "
                                                      r"https://example\.org/models/apc_360hr\.ckpt.*apc=PATH"):
        resolve_checkpoint(PUB, None)
    cached = tmp_path / "s3prl" / f"{hashlib.sha256(PUB.url.encode()).hexdigest()}.apc_360hr.ckpt"
    cached.parent.mkdir()
    cached.write_bytes(b"x")
    assert resolve_checkpoint(PUB, None) == cached  # s3prl's own download cache is used
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "apc_360hr.ckpt").write_bytes(b"x")
    monkeypatch.setenv(ssl_checkpoint.CHECKPOINT_DIR_ENV, str(mine))
    assert resolve_checkpoint(PUB, None) == mine / "apc_360hr.ckpt"  # the user's folder comes first


def test_a_folder_is_searched_for_its_one_checkpoint(tmp_path):
    (tmp_path / "pretrain-state.pt").write_bytes(b"x")  # the pretraining state never counts
    with pytest.raises(CheckpointNotFoundError, match="is a folder and found no .ckpt or .pt file"):
        resolve_checkpoint(PUB, tmp_path)
    (tmp_path / "model.ckpt").write_bytes(b"x")
    assert resolve_checkpoint(PUB, tmp_path) == tmp_path / "model.ckpt"
    (tmp_path / "other.pt").write_bytes(b"x")
    with pytest.raises(CheckpointNotFoundError, match="found model.ckpt, other.pt; pass the file itself"):
        resolve_checkpoint(PUB, tmp_path)
    (tmp_path / "apc.ckpt").write_bytes(b"x")
    assert resolve_checkpoint(PUB, tmp_path) == tmp_path / "apc.ckpt"  # NAME.ckpt wins


def test_unreadable_and_foreign_files_name_the_file_and_the_format(tmp_path):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointFormatError, match=r"junk\.ckpt: cannot be read as an APC checkpoint"):
        read_checkpoint(junk, "an APC checkpoint")
    listed = tmp_path / "list.ckpt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointFormatError, match=r"list\.ckpt: expected an APC checkpoint, .*found a list"):
        read_checkpoint(listed, "an APC checkpoint")
    tera = tmp_path / "tera.ckpt"
    torch.save({"Transformer": {}, "SpecHead": {}, "Config": {}}, tera)
    with pytest.raises(CheckpointFormatError, match=r"tera\.ckpt: expected an APC checkpoint, but it has no "
                                                    r"'config', 'model' .*looks like an s3prl Mockingjay/TERA"):
        read_checkpoint(tera, "an APC checkpoint", required=("config", "model"))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_every_factory_describes_its_published_model(name):
    factory = FACTORIES[name]
    layers, hidden_size, url_end = PUBLISHED[name]
    assert factory.published.name == name
    assert factory.info.source == factory.published.url
    assert factory.info.family and factory.info.description
    assert (factory.info.layers, factory.info.hidden_size) == (layers, hidden_size)
    assert factory.published.url == "https://" + url_end
    assert url_end.endswith("/" + factory.published.filename)


def test_every_published_model_has_a_factory():
    assert sorted(PUBLISHED) == sorted(FACTORIES)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_missing_checkpoint_names_its_url_and_how_to_pass_it(name, no_checkpoints):
    factory = FACTORIES[name]
    url, spec = re.escape(factory.published.url), re.escape(f"{name}=PATH")
    with pytest.raises(CheckpointNotFoundError, match=f"no checkpoint found.*{url}.*{spec}"):
        factory()
    missing = no_checkpoints / ("nope" + Path(factory.published.filename).suffix)
    with pytest.raises(CheckpointNotFoundError, match=f"{re.escape(str(missing))} does not exist.*{url}.*{spec}"):
        factory(path=str(missing))
    # by its published file name in $SUPERBENCH_CHECKPOINTS
    file = factory.write_random_checkpoint(no_checkpoints / factory.published.filename)
    assert factory().fingerprint() == factory(path=str(file)).fingerprint()


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_a_truncated_checkpoint_is_a_format_error(name, tmp_path, assert_format_error):
    factory = FACTORIES[name]
    whole = factory.write_random_checkpoint(tmp_path / factory.published.filename).read_bytes()
    truncated = tmp_path / ("truncated" + Path(factory.published.filename).suffix)
    truncated.write_bytes(whole[: len(whole) // 2])
    assert_format_error(factory, truncated)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_another_familys_checkpoint_is_a_format_error(family, tmp_path, assert_format_error):
    for other in sorted(set(FAMILIES) - {family}):
        other_name, other_factory = next(iter(FAMILIES[other].items()))
        suffix = Path(other_factory.published.filename).suffix
        file = other_factory.write_random_checkpoint(tmp_path / (other_name + suffix))
        for factory in FAMILIES[family].values():
            assert_format_error(factory, file)
