"""One config system: every shipped config validates, scorer sections come from the constructors, one --set syntax."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from mining.config import SCORER_SECTIONS, Config, ConfigError, load_config, scorer_arguments, scorer_params
from mining.configfile import Param, apply_override, describe_errors, params_model, read_yaml, signature_params
from mining.scorers import SCORERS, available_scorers
from raremine.cli import app
from synthesis.config import SynthConfig, SynthConfigError, load_synth_config

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").glob("*.yaml"))


def test_there_are_shipped_configs_of_both_kinds():
    names = [p.name for p in SHIPPED]
    assert "default.yaml" in names and any(n.startswith("synth-") for n in names), names


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_every_shipped_config_validates(path):
    """A synthesis config (it has ``generators``) or a mining config; either must load without an error."""
    data = read_yaml(path)
    if "generators" in data:
        cfg = load_synth_config(path)
        assert isinstance(cfg, SynthConfig) and cfg.generators
    else:
        cfg = load_config(path)
        assert isinstance(cfg, Config)
        for section in set(data) - {"scorers"}:  # every section given is kept as written (no silent drop)
            for key, value in data[section].items():
                got = getattr(getattr(cfg, section), key)
                got = got.model_dump() if hasattr(got, "model_dump") else got
                assert got == value or list(got) == value, (path.name, section, key, got, value)
        for name in data.get("scorers", {}):  # every scorer section builds its scorer's arguments
            assert set(scorer_params(cfg, name)) <= set(scorer_arguments(name))


def _constructor(name: str):
    module, cls = SCORERS[name].split(":")
    return getattr(__import__(module, fromlist=[cls]), cls)


@pytest.mark.parametrize("name", available_scorers())
def test_scorer_keys_and_defaults_are_the_constructors(name):
    """Read from the source without importing, the keys and defaults equal the imported constructor's."""
    params = {
        k: p.default
        for k, p in inspect.signature(_constructor(name).__init__).parameters.items()
        if k != "self" and p.default is not p.empty
    }
    assert {p.name: p.default for p in signature_params(SCORERS[name])} == params
    assert scorer_arguments(name) == list(params)
    if name in SCORER_SECTIONS:
        section = SCORER_SECTIONS[name]()
        for key, default in params.items():
            value = getattr(section, key)
            if default is None and value is not None:  # the value the code resolves None to
                assert getattr(_constructor(name)(), key) == value, (name, key)
            else:
                assert value == default, (name, key, value, default)


def test_reading_a_config_with_scorer_sections_imports_no_scorer_module():
    code = (
        "import sys; from mining.config import load_config, scorer_arguments; "
        "c = load_config(sys.argv[1], ['scorers.backbone.size=64', 'scorers.embedding.k=3']); "
        "assert scorer_arguments('autoencoder'); "
        "bad = [m for m in ('torch', 'sklearn', 'mining.scorers.backbone') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code, str(ROOT / "configs" / "magnetic-tile.yaml")], cwd=ROOT)
    assert res.returncode == 0


@pytest.mark.parametrize(
    ("override", "needles"),
    [
        ("scorers.contrast.border=abc", ["'scorers.contrast.border'", "'abc'", "allowed: an integer"]),
        ("scorers.contrast.bordr=3", ["'scorers.contrast.bordr'", "did you mean 'border'", "smooth_sigma"]),
        ("scorers.contrst.border=3", ["unknown key 'scorers.contrst'", "did you mean 'contrast'", "allowed keys: "]),
        ("scorers.backbone.size=33", ["'scorers.backbone.size'", "value 33", "a multiple of 32"]),
        ("backbone.size=33", ["'backbone.size'", "value 33", "a multiple of 32"]),
        ("embedding.methods=[knn, svm]", ["'embedding.methods.1'", "'svm'", "'knn', 'lof' or 'iforest'"]),
        ("backbone.global_layers=[13, 13]", ["'backbone.global_layers'", "distinct mobilenet_v2 block numbers"]),
    ],
)
def test_scorer_arguments_are_checked_when_the_config_is_read(override, needles):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    for needle in needles:
        assert needle in str(e.value), (needle, str(e.value))
    assert f"--set {override}" in str(e.value)


def test_scorer_values_are_passed_as_written():
    cfg = load_config(None, ["scorers.contrast.background_sigma=[24, 3]", "scorers.backbone.k=7"])
    assert scorer_params(cfg, "contrast") == {"background_sigma": [24, 3]}
    assert scorer_params(cfg, "backbone")["k"] == 7 and scorer_params(cfg, "backbone")["size"] == 224


def test_rank_fusion_key():
    assert load_config(None).rank.fusion == "cauchy"
    assert load_config(None, ["rank.fusion=mean"]).rank.fusion == "mean"
    with pytest.raises(ConfigError, match="fusion"):
        load_config(None, ["rank.fusion=median"])


def test_one_loader_for_both_configs_says_the_same_things(tmp_path):
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("seed: 1 # caf\xe9\n".encode("latin-1"))
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    for path, needle in ((latin1, "not UTF-8"), (folder, "is a folder"), (listing, "must hold a mapping")):
        with pytest.raises(ConfigError, match=needle):
            load_config(path)
        with pytest.raises(SynthConfigError, match=needle):
            load_synth_config(path)


def test_one_set_syntax_for_both_configs(tmp_path):
    demo = ROOT / "configs" / "synth-demo.yaml"
    cfg = load_synth_config(demo, overrides=["seed=7", "normals.glob='*.jpg'", "augment.cutout_prob=0.5"])
    assert (cfg.seed, cfg.normals.glob, cfg.augment.cutout_prob) == (7, "*.jpg", 0.5)
    assert load_synth_config(demo, overrides={"seed": 7}).seed == 7
    with pytest.raises(SynthConfigError, match=r"section\.key=value"):
        load_synth_config(demo, overrides=["seed"])
    with pytest.raises(
        SynthConfigError, match=r"key 'augment.cutout_prob': value 2 is not allowed; allowed: a number <= 1"
    ):
        load_synth_config(demo, overrides=["augment.cutout_prob=2"])
    with pytest.raises(ConfigError, match=r"'mine.workers' is a value \(2\), not a section"):
        load_config(None, ["mine.workers=2", "mine.workers.x=3"])


def test_cli_synth_takes_set(tmp_path):
    demo = ROOT / "configs" / "synth-demo.yaml"
    runner = CliRunner()
    res = runner.invoke(app, ["synth", "-c", str(demo), "--out", str(tmp_path / "o"), "--set", "n_images=3"])
    assert res.exit_code == 0, res.output
    assert "wrote 3 images" in res.output
    res = runner.invoke(app, ["synth", "-c", str(demo), "--out", str(tmp_path / "p"), "--set", "n_imges=3"])
    assert res.exit_code == 2
    assert "unknown key 'n_imges'" in res.output and "did you mean 'n_images'" in res.output
    assert "--set n_imges=3" in res.output


def test_params_model_keeps_one_source_of_defaults():
    params = [Param("k", int, 5), Param("arch", str | None, None)]
    model = params_model("M", params, {"k": {"ge": 1}, "arch": {"default": "a"}})
    assert model().k == 5 and model().arch == "a"
    with pytest.raises(ValidationError) as e:
        model(k=0)
    assert describe_errors(e.value, model, prefix="m") == ["key 'm.k': value 0 is not allowed; allowed: a number >= 1"]
    with pytest.raises(KeyError, match="not parameters"):
        params_model("M", params, {"nosuch": {"ge": 1}})
    with pytest.raises(ValueError, match="only default"):
        params_model("M", params, {"k": {"default": 6}})


def test_apply_override_parses_yaml_values():
    data: dict = {}
    for assignment in ("a.b=3", "a.c=[x, y]", "a.d=null", "a.e=", "f={k: 1}"):
        apply_override(data, assignment)
    assert data == {"a": {"b": 3, "c": ["x", "y"], "d": None, "e": ""}, "f": {"k": 1}}
    with pytest.raises(ConfigError, match="not a valid YAML value"):
        apply_override(data, "a.b=[1")


def test_default_yaml_scorers_section_names_every_scorer_argument():
    data = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text(encoding="utf-8"))
    for name, params in data["scorers"].items():
        assert list(params) == scorer_arguments(name), f"scorers.{name} in default.yaml lists other keys"
