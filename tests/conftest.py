import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models are dominated by thread hand-off on 2 cores; one thread is several times faster.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Keep every test's data, caches, results and leaderboard out of the user's home."""
    home = tmp_path_factory.getbasetemp() / "superbench-home"
    monkeypatch.setenv("SUPERBENCH_HOME", str(home))
    monkeypatch.delenv("SUPERBENCH_DB", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
    from superbench.task_info import forget_learned

    forget_learned()  # task descriptions that one test's records taught never leak into another


@pytest.fixture()
def tone_task(tmp_path):
    """(utterance cache, data(split) -> (ids, class indices)) of a small tone corpus (superbench.testing)."""
    from superbench.testing import cached_class_task

    return cached_class_task(tmp_path)


@pytest.fixture(scope="session")
def builtin_task_names() -> set[str]:
    """The built-in tasks, found by their convention (a `recipes/<task>.py` beside its `recipes/<task>.yaml`),
    so a new task is covered without editing a list here."""
    recipes = Path(__file__).resolve().parent.parent / "recipes"
    return {p.stem for p in recipes.glob("*.yaml") if p.with_suffix(".py").is_file()}


S3PRL_MISSING = "s3prl is not installed: `make reference-env` then `make test-reference` runs the equivalence tests"


def pytest_collection_modifyitems(config, items):
    """Tests marked `s3prl` (the equivalence tests against s3prl) skip where s3prl cannot be imported."""
    marked = [item for item in items if item.get_closest_marker("s3prl")]
    if not marked:
        return
    from upstreams.s3prl_hub import S3PRLNotInstalledError, import_s3prl_nn

    try:
        import_s3prl_nn()
    except S3PRLNotInstalledError:
        for item in marked:
            item.add_marker(pytest.mark.skip(reason=S3PRL_MISSING))


@pytest.fixture()
def no_checkpoints(tmp_path, monkeypatch):
    """An empty `$SUPERBENCH_CHECKPOINTS` folder (returned) and s3prl download cache: a published model's
    default lookup finds nothing until the test puts a file there."""
    from upstreams import ssl_checkpoint

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    monkeypatch.setenv(ssl_checkpoint.CHECKPOINT_DIR_ENV, str(folder))
    monkeypatch.setattr(ssl_checkpoint, "S3PRL_CACHE", tmp_path / "s3prl-cache")
    return folder


@pytest.fixture()
def assert_format_error():
    """`check(factory, file, says="")`: building the upstream from `file` raises `CheckpointFormatError` whose
    message names the file, followed somewhere by the regex `says`."""
    import re

    from upstreams.ssl_checkpoint import CheckpointFormatError

    def check(factory, file, says: str = "") -> None:
        with pytest.raises(CheckpointFormatError, match=re.escape(str(file)) + (f".*{says}" if says else "")):
            factory(path=str(file))

    return check


@pytest.fixture()
def assert_upstream_contract():
    """`check(up, max_params=300_000, **attributes)`: `validate_upstream` passes, the named attributes
    (num_layers, hidden_size, ...) have the given values, and the model is small enough for a fast test."""
    from superbench.validate import all_passed, format_checks, validate_upstream

    def check(up, max_params: int = 300_000, **attributes) -> None:
        checks = validate_upstream(up)
        assert all_passed(checks), format_checks(checks)
        assert {name: getattr(up, name) for name in attributes} == attributes
        assert sum(p.numel() for p in up.parameters()) < max_params

    return check


@pytest.fixture()
def assert_matches_s3prl():
    """`check(upstream, hub_name, ckpt_path, wavs, atol, label, max_extra_frames=None)`: every layer of `upstream`
    (run on the padded batch) is within `atol` of s3prl's `hub_name` upstream on the same checkpoint, each utterance
    run alone through s3prl (`upstreams.s3prl_hub.layer_differences`); prints and returns the max abs difference
    per layer. For tests marked `s3prl`."""
    from upstreams.s3prl_hub import layer_differences, s3prl_layers_alone

    def check(upstream, hub_name, ckpt_path, wavs, atol: float, label: str, max_extra_frames=None) -> list[float]:
        reference = s3prl_layers_alone(hub_name, ckpt_path, wavs)
        worst = layer_differences(upstream, reference, wavs, max_extra_frames=max_extra_frames)
        message = f"{label}: max abs difference per layer vs s3prl: " + ", ".join(f"{d:.2e}" for d in worst)
        print(message)
        assert max(worst) < atol, f"{message} (tolerance {atol})"
        return worst

    return check


@pytest.fixture()
def features_with_changed_weights(tmp_path):
    """`run(factory, checkpoint, change, wavs)`: the upstream's hidden states for `wavs` from `checkpoint`, and
    from a copy of it that `change(loaded checkpoint dict)` edited in place; to test that weights are used."""
    from pathlib import Path

    def run(factory, checkpoint, change, wavs) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        base, _ = factory(path=str(checkpoint)).extract(wavs)
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        change(state)
        edited = tmp_path / f"edited-{Path(checkpoint).name}"
        torch.save(state, edited)
        changed, _ = factory(path=str(edited)).extract(wavs)
        return base, changed

    return run
