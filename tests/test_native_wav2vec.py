"""Native wav2vec / vq-wav2vec: tiny random checkpoints in both published formats, the contract, bad files."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from superbench.testing import chirp_wavs
from upstreams.hf import conv_geometry
from upstreams.ssl_checkpoint import CheckpointFormatError
from upstreams.wav2vec import (
    DATACLASS_DEFAULTS,
    FACTORIES,
    PUBLISHED,
    Wav2VecArch,
    parse_layer_spec,
    tiny_model_cfg,
    write_random_checkpoint,
)

NAMES = ["wav2vec", "vq_wav2vec", "vq_wav2vec_kmeans"]


def clips(*lengths: int, seed: int = 0) -> list[np.ndarray]:
    return chirp_wavs(lengths, seed, chirp=0.0, noise=0.3)  # white noise


def features(up, wavs) -> list[torch.Tensor]:
    hidden, _ = up.extract(wavs)
    return hidden


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wav2vec")
    return {name: FACTORIES[name].write_random_checkpoint(folder / f"{name}.pt", seed=1) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_tiny_random_checkpoints_keep_the_contract(name, checkpoints, assert_upstream_contract):
    up = FACTORIES[name](path=str(checkpoints[name]))
    # 4 aggregator layers: z, 3 inner aggregator inputs, c
    assert_upstream_contract(up, max_params=100_000, num_layers=5, hidden_size=32, downsample_rate=160,
                             receptive_field=465)
    assert up.arch.vq_type == {"wav2vec": "none", "vq_wav2vec": "gumbel", "vq_wav2vec_kmeans": "kmeans"}[name]


def test_written_checkpoint_is_s3prls_converted_form(checkpoints):
    ckpt = torch.load(checkpoints["vq_wav2vec"], weights_only=True)
    assert set(ckpt) == {"task_cfg", "model_cfg", "model_weight"}
    assert ckpt["model_cfg"]["_name"] == "wav2vec" and ckpt["model_cfg"]["vq_type"] == "gumbel"
    weights = ckpt["model_weight"]
    # fairseq's key names, the training-only prediction head included (s3prl loads strictly)
    for key in ("feature_extractor.conv_layers.0.0.weight", "feature_extractor.conv_layers.0.2.weight",
                "feature_aggregator.conv_layers.0.1.weight", "feature_aggregator.conv_layers.0.3.bias",
                "vector_quantizer.vars", "vector_quantizer.weight_proj.0.0.weight",
                "wav2vec_predictions.project_to_steps.weight"):
        assert key in weights, key


def test_published_geometry_from_the_published_config():
    """s3prl's hub: 13 hidden states of 512, 160 samples per frame; the conv stack sees 465 samples."""
    arch = Wav2VecArch.from_config({"infonce": False}, DATACLASS_DEFAULTS, "x")
    assert len(arch.aggregator_layers) + 1 == 13 and arch.embed == 512
    assert conv_geometry([k for _, k, _ in arch.feature_layers], [s for _, _, s in arch.feature_layers]) == (465, 160)
    assert FACTORIES["wav2vec"].info.layers == 13 and FACTORIES["vq_wav2vec"].info.hidden_size == 512
    assert PUBLISHED["wav2vec"].url.endswith("/s3prl/converted_ckpts/resolve/main/wav2vec_large.pt")
    assert PUBLISHED["vq_wav2vec_kmeans"].filename == "vq-wav2vec_kmeans.pt"


def test_layer_spec_parser_takes_fairseqs_expressions_only():
    assert parse_layer_spec("[(512, 10, 5)] + [(512, 4, 2)] * 3", "f", "x") == ((512, 10, 5),) + ((512, 4, 2),) * 3
    with pytest.raises(CheckpointFormatError, match="conv_feature_layers"):
        parse_layer_spec("__import__('os').getcwd()", "conv_feature_layers", "x")


@pytest.mark.parametrize("form", ["args", "cfg"])
def test_fairseq_formats_give_the_same_features(form, checkpoints, tmp_path):
    """fairseq's own .pt (argparse `args`, or `cfg`) reads like s3prl's converted file."""
    converted = torch.load(checkpoints["vq_wav2vec_kmeans"], weights_only=True)
    cfg = {k: v for k, v in converted["model_cfg"].items() if k != "_name"}
    if form == "args":
        ckpt = {"args": argparse.Namespace(arch="wav2vec", task="audio_pretraining", **cfg),
                "model": converted["model_weight"], "optimizer_history": [], "extra_state": {}}
    else:
        ckpt = {"cfg": {"model": converted["model_cfg"], "task": converted["task_cfg"]},
                "model": converted["model_weight"]}
    file = tmp_path / "vq-wav2vec_kmeans.pt"
    torch.save(ckpt, file)
    fairseq_up = FACTORIES["vq_wav2vec_kmeans"](path=str(file))
    assert fairseq_up.format.startswith("fairseq")
    wavs = clips(9000, 12000)
    ref = features(FACTORIES["vq_wav2vec_kmeans"](path=str(checkpoints["vq_wav2vec_kmeans"])), wavs)
    for a, b in zip(features(fairseq_up, wavs), ref):
        assert torch.equal(a, b)


def test_fairseq_args_take_the_architecture_defaults(tmp_path):
    """A Namespace lacking fields gets fairseq's base_wav2vec_architecture values (as s3prl's legacy expert)."""
    cfg = tiny_model_cfg()
    for key in ("skip_connections_agg", "log_compression", "vq_type"):
        del cfg[key]
    weights = torch.load(write_random_checkpoint(tmp_path / "a.pt"), weights_only=True)["model_weight"]
    file = tmp_path / "old.pt"
    torch.save({"args": argparse.Namespace(arch="wav2vec", **cfg), "model": weights}, file)
    up = FACTORIES["wav2vec"](path=str(file))
    assert not up.arch.skip_connections_agg and not up.arch.log_compression and up.arch.vq_type == "none"


def test_padding_does_not_leak_through_the_group_norms(checkpoints):
    """GroupNorm(1, C) normalises over time: a short clip in a batch must match the clip alone."""
    up = FACTORIES["wav2vec"](path=str(checkpoints["wav2vec"]))
    short, long_ = clips(5000, 20000)
    batch = features(up, [short, long_])
    alone = features(up, [short])
    n = alone[0].shape[1]
    for b, a in zip(batch, alone):
        assert torch.allclose(b[0, :n], a[0], atol=1e-5)
    # the naive batched run (what s3prl's padded batch computes) does differ
    padded = torch.zeros(1, 20000)
    padded[0, :5000] = torch.from_numpy(short)
    naive = up.model.feature_extractor._run(padded, [20000])[0, :, :n].T
    assert float((naive - alone[0][0]).abs().max()) > 1e-3


@pytest.mark.parametrize("name", ["wav2vec", "vq_wav2vec"])
def test_weights_are_loaded_and_the_prediction_head_is_not_used(name, checkpoints, features_with_changed_weights):
    def head(ckpt):
        ckpt["model_weight"]["wav2vec_predictions.project_to_steps.weight"].mul_(3.0)

    def aggregator(ckpt):
        ckpt["model_weight"]["feature_aggregator.conv_layers.1.1.weight"].mul_(1.5)

    base, same = features_with_changed_weights(FACTORIES[name], checkpoints[name], head, clips(8000))
    assert all(torch.equal(a, b) for a, b in zip(base, same))
    _, changed = features_with_changed_weights(FACTORIES[name], checkpoints[name],
                                               lambda ckpt: (head(ckpt), aggregator(ckpt)), clips(8000))
    assert torch.equal(changed[0], base[0]) and torch.equal(changed[1], base[1])  # before the changed layer
    assert float((changed[2] - base[2]).abs().max()) > 1e-3


def test_other_families_and_broken_files_are_format_errors(tmp_path, assert_format_error):
    """What they look like; any family's file, or a truncated one, naming the file: test_native_registry.py."""
    apc = tmp_path / "apc.ckpt"
    torch.save({"config": {"model": {"paras": {}}}, "model": {"w": torch.zeros(2)}}, apc)
    assert_format_error(FACTORIES["wav2vec"], apc, "APC")

    w2v2 = tmp_path / "wav2vec_small.pt"
    torch.save({"task_cfg": {"_name": "audio_pretraining"}, "model_cfg": {"_name": "wav2vec2", "encoder_layers": 12},
                "model_weight": {"encoder.layers.0.fc1.weight": torch.zeros(2, 2)}}, w2v2)
    assert_format_error(FACTORIES["wav2vec"], w2v2, "'wav2vec2'")

    ckpt = torch.load(write_random_checkpoint(tmp_path / "good.pt"), weights_only=True)
    torch.save({**ckpt, "model_cfg": {**ckpt["model_cfg"], "aggregator": "gru"}}, tmp_path / "gru.pt")
    assert_format_error(FACTORIES["wav2vec"], tmp_path / "gru.pt", "aggregator 'gru'")

    ckpt["model_cfg"]["conv_aggregator_layers"] = "[(32, 2, 1), (32, 3, 1), (32, 4, 1)]"  # one layer short
    torch.save(ckpt, tmp_path / "mismatch.pt")
    assert_format_error(FACTORIES["wav2vec"], tmp_path / "mismatch.pt", "do not fit.*unexpected")
