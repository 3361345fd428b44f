"""Built-ins are found by convention: a new upstream module, demo part or corpus preparer shows up
without editing any list, and the demo corpus's version follows its parts."""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import recipes.prepare as prepare_pkg
import upstreams
from recipes.prepare import demo, format_summary
from superbench.cli import main
from superbench.manifest import write_task_manifest
from superbench.preparers import PREPARERS, Preparer, PrepareRequest, resolve_generated
from superbench.testing import ToneUpstream
from superbench.upstream import UPSTREAMS, UpstreamFactory, UpstreamInfo, describe_factory, load_upstream

ROOT = Path(__file__).resolve().parent.parent

FAMILY_SOURCE = '''
from superbench.testing import ToneUpstream
from superbench.upstream import UpstreamFactory, UpstreamInfo


def tone(path=None, **kw):
    return ToneUpstream()


def bare(path=None, **kw):
    return ToneUpstream()


FACTORIES = {"zz-tone": UpstreamFactory(tone, UpstreamInfo(family="probe", layers=3, hidden_size=16)),
             "zz-bare": bare}
'''


@pytest.fixture
def extra_package_dir(tmp_path, monkeypatch):
    """A folder added to a package's search path, as if a module had been dropped into the package."""

    def add(package) -> Path:
        folder = tmp_path / package.__name__.replace(".", "_")
        folder.mkdir()
        monkeypatch.setattr(package, "__path__", [*package.__path__, str(folder)])
        return folder

    yield add
    for name in [n for n in sys.modules if n.startswith(("upstreams.zz_", "recipes.prepare.demo_zz"))]:
        del sys.modules[name]


# --------------------------------------------------------------------------- upstreams

def test_a_new_upstream_module_is_listed_with_its_declared_sizes(extra_package_dir, capsys):
    UPSTREAMS.names()  # read the entry points before the new module exists: afterwards it must be gone
    (extra_package_dir(upstreams) / "zz_probe.py").write_text(FAMILY_SOURCE)
    with UPSTREAMS.scoped(rescan=True):
        assert main(["upstreams", "list"]) == 0
        rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[2:] if line.strip()}
        assert rows["zz-tone"][1:4] == ["probe", "3", "16"]
        assert rows["zz-bare"][1:4] == ["-", "?", "?"]  # a plain function declares nothing
        assert rows["fbank"][1:4] == ["kaldi", "1", "240"]
        assert load_upstream("zz-tone").num_layers == ToneUpstream.num_layers
    assert "zz-tone" not in UPSTREAMS


def test_a_name_claimed_by_two_upstream_modules_is_an_error(extra_package_dir):
    folder = extra_package_dir(upstreams)
    (folder / "zz_one.py").write_text(FAMILY_SOURCE)
    (folder / "zz_two.py").write_text(FAMILY_SOURCE)
    with pytest.raises(RuntimeError, match="upstreams.zz_two registers names already taken: zz-bare, zz-tone"):
        assert upstreams.FAMILY


def test_factory_info_is_a_documented_member_with_defaults():
    assert UpstreamFactory(lambda path=None: None).info == UpstreamInfo()
    assert UpstreamInfo().layers == "?" and UpstreamFactory(lambda: None).write_random_checkpoint is None
    lazy = UpstreamFactory(lambda: None, info=lambda: UpstreamInfo(layers=7))
    assert describe_factory(lazy).layers == 7
    assert describe_factory(ToneUpstream) == UpstreamInfo(layers=3, hidden_size=16)  # a class's contract sizes
    assert describe_factory(object()) == UpstreamInfo()


def test_load_spec_is_a_property_not_an_attribute_set_after_construction():
    built = load_upstream("fbank", cmvn=False)
    assert built.load_spec == ("fbank", None, {"cmvn": False})
    assert "load_spec" not in vars(built)
    assert ToneUpstream().load_spec is None and built.variant(gain_db=-3.0).load_spec is None


def test_an_upstream_overriding_variant_is_told_to_override_specific_variant(caplog):
    class Old(ToneUpstream):
        def variant(self, **options):
            return self

    from superbench.upstream import as_upstream
    as_upstream(Old(), "old.py:Old")
    assert "old.py:Old overrides Upstream.variant" in caplog.text and "specific_variant" in caplog.text


# --------------------------------------------------------------------------- demo parts

PART_SOURCE = '''
TASK = "zz"
ORDER = 99
SIZE = {size}


def plan(p):
    pass


def write(p, out, fill, common, extra_common):
    return None
'''


def test_the_five_demo_parts_keep_their_draw_order():
    # their draws come one after another from one generator: the order is what keeps the audio unchanged, and
    # later parts (SE, SS, then the OOD-ASR languages and ST, then VC) draw after them
    assert [part.TASK for part in demo.demo_parts()] == ["ic", "sf", "sv", "qbe", "sd", "se", "ss",
                                                         "ood_es", "ood_zh", "ood_ar", "st", "vc"]


def test_a_new_or_changed_demo_part_regenerates_existing_corpora(extra_package_dir, tmp_path, monkeypatch):
    made = []

    def fake_prepare(out, size="default", seed=0):  # what matters here: the marker, written as the real one is
        made.append(corpus_version := demo.corpus_version())
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / demo.MARKER).write_text(json.dumps({"version": corpus_version, "size": size, "seed": seed}))

    monkeypatch.setattr(demo, "prepare_demo", fake_prepare)
    monkeypatch.setattr(demo, "demo_dir", lambda size: tmp_path / f"demo-{size}")
    before = demo.corpus_version()
    demo.ensure_demo("tiny")
    demo.ensure_demo("tiny")
    assert made == [before]  # complete and current: reused

    part = extra_package_dir(prepare_pkg) / "demo_zzprobe.py"
    part.write_text(PART_SOURCE.format(size=1))
    assert [p.TASK for p in demo.demo_parts()][-1] == "zz"  # found by its name, drawn last (ORDER 99)
    demo.ensure_demo("tiny")
    assert len(made) == 2 and made[1] != before  # a new part: made again

    part.write_text(PART_SOURCE.format(size=12345))
    del sys.modules["recipes.prepare.demo_zzprobe"]
    demo.ensure_demo("tiny")
    assert len(made) == 3 and made[2] not in (before, made[1])  # a changed part: made again
    demo.ensure_demo("tiny")
    assert len(made) == 3
    assert json.loads((tmp_path / "demo-tiny" / demo.MARKER).read_text())["version"] == made[2]


# --------------------------------------------------------------------------- preparers

def _toy_prepare(request: PrepareRequest) -> Path:
    """A one-task corpus: every file in the root is a speaker's utterance (for the tests)."""
    speakers = int(request.options.get("speakers", "2"))
    rows = [{"id": f"u{i}", "audio": str(Path(request.root) / f"u{i}.wav"), "speaker": f"s{i % speakers}",
             "sample_rate": 16000, "num_samples": 32000, "label": f"s{i % speakers}"} for i in range(6)]
    splits = {"train": rows[:4], "dev": rows[4:5], "test": rows[5:]}
    write_task_manifest(request.out / "sid", task="sid", corpus="toy", version="1", label_field="label",
                        labels=sorted({r["label"] for r in rows}), splits=splits)
    return request.out


def test_a_registered_preparer_is_offered_by_data_prepare(tmp_path, capsys, caplog):
    with PREPARERS.scoped():
        PREPARERS.register("toy", Preparer("toy", prepare=_toy_prepare, writes="sid",
                                           options={"speakers": "how many speakers"}), source="test")
        code = main(["data", "prepare", "toy", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--option", "speakers=3", "--task", "ks"])
        out = capsys.readouterr().out
        assert code == 0 and f"toy: manifests in {tmp_path / 'o'}" in out
        meta = json.loads((tmp_path / "o" / "sid" / "meta.json").read_text())
        assert meta["labels"] == ["s0", "s1", "s2"]
        # a VoxCeleb-like (SID only) corpus: no claim about PR reusing ASR audio
        assert "total audio: 0.2 min\n" in out + "\n" and "PR reuses" not in out
        assert "toy does not read --task; ignored" in caplog.text
        assert main(["data", "list"]) == 0
        assert "toy" in capsys.readouterr().out
    assert "toy" not in PREPARERS


def test_a_plugin_package_adds_a_corpus_through_the_entry_point_group(tmp_path, monkeypatch, capsys):
    (tmp_path / "toy_corpus_plugin.py").write_text(textwrap.dedent('''
        from superbench.preparers import Preparer

        def ensure(size):
            return size

        PREPARER = Preparer("toycorpus", ensure=ensure, writes="nothing")
    '''))
    info = tmp_path / "toy_corpus_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-corpus-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[superbench.preparers]\ntoycorpus = toy_corpus_plugin:PREPARER\n")
    PREPARERS.names()  # read before the plugin is installed: afterwards it must be gone
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with PREPARERS.scoped(rescan=True):
            assert PREPARERS.source("toycorpus") == "entry point toy_corpus_plugin:PREPARER"
            assert "voxceleb1" in PREPARERS and "demo" in PREPARERS  # the built-ins are still there
            assert resolve_generated("toycorpus:big") == "big" and resolve_generated("toycorpus") is None
            assert resolve_generated("voxceleb1") is None and resolve_generated(str(tmp_path)) is None
            assert main(["data", "prepare", "toycorpus", "--root", "x"]) == 2  # made, not read from disk
            assert "toycorpus" not in capsys.readouterr().out
        assert "toycorpus" not in PREPARERS
    finally:
        sys.modules.pop("toy_corpus_plugin", None)


def test_pretraining_audio_comes_from_any_generated_corpus_without_importing_recipes(tmp_path):
    from upstreams.pretrain.data import load_pretrain_audio

    for i in range(6):
        sf.write(tmp_path / f"u{i}.wav", np.random.default_rng(i).standard_normal(8000).astype("float32"), 16000)
    corpus = _toy_prepare(PrepareRequest(str(tmp_path), tmp_path / "corpus"))
    with PREPARERS.scoped():
        PREPARERS.register("toygen", Preparer("toygen", ensure=lambda size: corpus), source="test")
        audio = load_pretrain_audio("toygen:small")
    assert len(audio.wavs) == 4 and "training splits" in audio.source  # the train split's files only
    tree = ast.parse((ROOT / "upstreams" / "pretrain" / "data.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.startswith("recipes") for m in imported)


def test_summary_says_pr_reuses_asr_audio_only_when_both_are_there():
    row = {"utterances": 2, "speakers": 1, "minutes": 1.5, "classes": 3, "splits": {}}
    assert format_summary({"asr": row, "pr": row}).splitlines()[-1] == "total audio: 1.5 min (PR reuses the ASR audio)"
    assert format_summary({"sid": row, "sv": row}).splitlines()[-1] == "total audio: 3.0 min"
    # a task name longer than the column's five characters widens it, so every column still lines up
    head, asr, ood = format_summary({"asr": row, "ood_sbcsae": row}).splitlines()[:3]
    assert head.index("minutes") + len("minutes") == asr.index("1.5") + 3 == ood.index("1.5") + 3  # right-aligned
    assert format_summary({"pr": row}).splitlines()[-1] == "total audio: 1.5 min"
