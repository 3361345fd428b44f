"""Run options: five frozen parts, each checked once when built; --layer parsed into one LayerChoice."""

from __future__ import annotations

import dataclasses

import pytest

from superbench.options import ComputeOptions, LayerChoice, RunIdentity, RunOptions


@pytest.mark.parametrize(("given", "value"), [(None, None), ("last", "last"), ("all", "all"), ("3", 3), (0, 0)])
def test_layer_choice_parses_once_from_text_or_value(given, value):
    choice = LayerChoice.parse(given)
    assert choice.value == value and LayerChoice.parse(choice) is choice
    assert RunIdentity(layer=given).layer == choice


@pytest.mark.parametrize(("given", "message"), [("every", "--layer must be an integer, 'last' or 'all'"),
                                                (True, "--layer must be an integer"),
                                                (-1, "--layer -1 is out of range")])
def test_a_bad_layer_is_refused_where_it_is_parsed(given, message):
    with pytest.raises(ValueError, match=message):
        LayerChoice.parse(given)


def test_layer_probes_expand_all_and_check_the_upstream():
    assert [p.value for p in LayerChoice("all").probes(3, "up")] == [0, 1, 2]
    assert LayerChoice(None).probes(3, "up") == [LayerChoice(None)]
    with pytest.raises(ValueError, match="--layer 3 is out of range: upstream up has 3 layers, 0..2"):
        LayerChoice(3).probes(3, "up")


def test_feature_tags_are_a_tuple_of_what_changes_the_features():
    assert ComputeOptions().feature_tags("frame") == ()
    assert ComputeOptions(precision="bf16", cache_dtype="int8").feature_tags("frame") == ("bf16", "int8")
    assert ComputeOptions(cache_dtype="int8").feature_tags("utterance") == ()  # utterance caches: float32 anyway


def test_flat_names_reach_their_part_and_parts_stay_frozen(tmp_path):
    opts = RunOptions.of(seeds=2, cache_dtype="int8", executor="ray", cache_root=tmp_path, progress=False)
    assert (opts.identity.seeds, opts.compute.cache_dtype, opts.execution.executor) == (2, "int8", "ray")
    assert opts.paths.cache_root == tmp_path and opts.hooks.progress is False
    again = opts.replace(layer="all", overwrite=True)
    assert again.identity.layer == LayerChoice("all") and again.execution.overwrite
    assert again.identity.seeds == 2 and opts.identity.layer == LayerChoice(None)  # a copy, the original unchanged
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.identity.seeds = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="no option 'sedes'"):
        RunOptions.of(sedes=2)
    assert RunOptions(identity=RunIdentity(profile="fast")).paths.results_dir is None


@pytest.mark.parametrize(("values", "message"), [
    ({"executor": "slurm"}, r"--executor 'slurm': use one of local, ray"),
    ({"cache_dtype": "int4"}, r"--cache-dtype 'int4': use one of fp16, int8"),
    ({"precision": "fp8"}, r"--precision 'fp8': use one of fp32, bf16, fp16"),
    ({"seeds": 0}, r"seeds must be an integer in 1..1000"),
    ({"train_threads": 0}, r"train_threads must be a positive integer or None"),
])
def test_each_part_checks_its_values_when_built(values, message):
    with pytest.raises(ValueError, match=message):
        RunOptions.of(**values)

