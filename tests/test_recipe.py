"""Recipes: shipped files load; bad recipes raise RecipeError naming the file and the key; CLI exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinyprec.errors import RecipeError
from tinyprec.recipe import build_model_for, load_recipe, parse_recipe
from tinyprec.zoo import ARCHITECTURES

MODELS = Path(__file__).resolve().parents[1] / "models"
SHIPPED = ["digits_cnn", "mnist1d_cnn", "kws_ds_cnn", "ic_resnet8", "vww_mobilenet_v1", "ad_autoencoder",
           "ad_autoencoder_quick"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_recipes_load(name: str) -> None:
    recipe = load_recipe(MODELS / f"{name}.toml")
    assert recipe.name == name
    assert recipe.path == (MODELS / f"{name}.toml").resolve()
    assert recipe.model.arch in ARCHITECTURES


def test_defaults_and_types() -> None:
    r = load_recipe(MODELS / "digits_cnn.toml")
    assert r.quant.mode == "qat" and r.quant.calibration == "moving_average" and r.quant.percentile == 99.99
    assert r.quant.per_channel is True and r.quant.output_softmax is False
    assert r.export.float_io is False and r.export.golden_vectors == 4 and r.export.onnx is True
    assert r.validate.max_drop == 1.0 and r.validate.flash_budget is None
    assert isinstance(r.train.lr, float)
    with pytest.raises(AttributeError):
        r.train.epochs = 3  # type: ignore[misc]


def _write(tmp_path: Path, text: str, name: str = "r.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "body,pattern",
    [
        ('[model]\narch = "digits_cnn"\n[train]\nepoch = 3\n', r"unknown key 'train\.epoch'; allowed: epochs"),
        ('[model]\narch = "digits_cnn"\n[train]\nepochs = "3"\n', r"'train\.epochs' = '3' is not valid; expected int"),
        ('[model]\narch = "digits_cnn"\n[train]\nprecision = "fp8"\n', r"'train\.precision'.*one of 'auto'"),
        ('[model]\narch = "resnet9"\n', r"unknown architecture 'model\.arch' = 'resnet9'; allowed: digits_cnn"),
        ('[model]\narch = "digits_cnn"\n[data]\nname = "npz"\npath = "missing.npz"\n', r"'data\.path' file not found"),
        ('[model]\nmodule = "nothere.py:build"\n', r"'model\.module' file not found"),
        ('[model]\narch = "digits_cnn"\n[quant]\nper_channel = 1\n', r"'quant\.per_channel'.*expected bool"),
        ('[train]\nepochs = 3\n', r"missing section \[model\]"),
        ('[model]\narch = "digits_cnn"\n[exports]\n', r"unknown key 'exports'"),
        ('[model]\narch = "digits_cnn"\nseed = 1.5\n', r"unknown key 'model\.seed'"),
        ('seed = "x"\n[model]\narch = "digits_cnn"\n', r"'seed' = 'x' is not valid"),
        ('[model\n', r"not valid TOML"),
    ],
)
def test_bad_recipe_names_file_and_key(tmp_path: Path, body: str, pattern: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(RecipeError, match=pattern) as info:
        load_recipe(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_recipe_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_recipe_folder(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.npz").write_bytes(b"")
    (sub / "m.py").write_text(
        "import torch\ndef build(n=3):\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, n))\n"
    )
    r = load_recipe(_write(sub, '[model]\nmodule = "m.py:build"\n[model.args]\nn = 5\n[data]\nname = "npz"\npath = "d.npz"\n'))
    assert r.data.path == (sub / "d.npz").resolve()
    model = build_model_for(r)
    assert model[1].out_features == 5


def test_user_module_errors(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def build():\n    return 3\n")
    r = load_recipe(_write(tmp_path, '[model]\nmodule = "m.py:build"\n'))
    with pytest.raises(RecipeError, match="returned int, not a torch.nn.Module"):
        build_model_for(r)
    r = load_recipe(_write(tmp_path, '[model]\nmodule = "m.py:nothing"\n'))
    with pytest.raises(RecipeError, match="has no callable 'nothing'"):
        build_model_for(r)
    r = load_recipe(_write(tmp_path, '[model]\narch = "digits_cnn"\n[model.args]\nwidht = 3\n'))
    with pytest.raises(RecipeError, match=r"r\.toml.*model\.args\.widht"):
        build_model_for(r)


def test_parse_recipe_in_code() -> None:
    r = parse_recipe({"model": {"arch": "ds_cnn"}, "data": {"name": "synthetic", "shape": [1, 49, 10]}})
    assert r.data.shape == (1, 49, 10) and r.path is None and r.name == "recipe"
