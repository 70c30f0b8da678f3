"""Errors found on the way (issue 11): a model builder that raises, ADD/MUL shapes that cannot broadcast in a
foreign .tflite, and torch's LeafSpec FutureWarning, each reported at the trust boundary as one line."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tinyprec.errors import ModelFormatError

RECIPE = ('[model]\nmodule = "mymodel.py:build"\n[model.args]\nwidth = 3\n[data]\nname = "synthetic"\n'
          'shape = [1, 8, 8]\nnum_classes = 4\nsamples = 32\n[train]\nepochs = 1\nprecision = "fp32"\n')


@pytest.mark.parametrize("body, what", [
    ("def build(width):\n    layers = make_layers(width)\n    return layers\n\n"
     "def make_layers(width):\n    raise ValueError(f'width {width} is odd')\n", "ValueError: width 3 is odd"),
    ("import torch\nWIDTH = undefined_name\n\ndef build(width):\n    return torch.nn.Linear(width, 2)\n",
     "NameError: name 'undefined_name' is not defined"),
])
def test_builder_exception_exits_2_with_user_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str,
                                                    what: str) -> None:
    from _cli import run_cli

    (tmp_path / "mymodel.py").write_text(body)
    (tmp_path / "r.toml").write_text(RECIPE)
    code, out, err = run_cli(["train", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert lines[-1].startswith("tinyprec: error: ") and what in lines[-1], err
    assert "mymodel.py" in lines[-1]  # names the builder
    assert f'File "{tmp_path / "mymodel.py"}"' in err  # the user's own frames ...
    assert "tinyprec/recipe.py" not in err and "site-packages" not in err  # ... and only theirs
    if "make_layers" in body:
        assert "in make_layers" in err and "in build" in err


def test_builder_args_that_do_not_fit_still_say_so(tmp_path: Path) -> None:
    from tinyprec.errors import RecipeError, UserCodeError
    from tinyprec.recipe import build_model_for, load_recipe

    (tmp_path / "mymodel.py").write_text("import torch\n\ndef build(depth):\n    return torch.nn.Linear(depth, 2)\n")
    (tmp_path / "r.toml").write_text(RECIPE)
    with pytest.raises(RecipeError, match="'model.args' do not fit") as info:
        build_model_for(load_recipe(tmp_path / "r.toml"))
    assert not isinstance(info.value, UserCodeError)


@pytest.mark.parametrize("op_name", ["ADD", "MUL"])
def test_foreign_tflite_operands_that_cannot_broadcast_fail_at_prepare(op_name: str) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from _micro import MicroBuilder

    from tinyprec.emulator import Emulator
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.formats.tflite_writer import write_tflite
    from tinyprec.ir import ElementwiseOptions, OpType

    b = MicroBuilder(np.random.default_rng(0), "foreign")
    x1, x2 = b.input("x1", (1, 4, 4, 3)), b.input("x2", (1, 4, 4, 2))
    y = b.act("y", (1, 4, 4, 3), 0.05, 0)
    b.op(OpType[op_name], (x1, x2), (y,), ElementwiseOptions())
    graph = read_tflite(write_tflite(b.graph([y])))
    with pytest.raises(ModelFormatError, match=r"\(1, 4, 4, 3\) and \(1, 4, 4, 2\) do not broadcast"):
        Emulator(graph)


def test_no_leafspec_future_warning() -> None:
    torch = pytest.importorskip("torch")
    from _ops_e2e import convert

    from tinyprec._quiet import quiet_third_party
    from tinyprec.quant.exact import tflm_exact

    converted, _ = convert(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()), (1, 6, 6), n=16)
    import copy

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        copy.deepcopy(converted)
    assert any("LeafSpec" in str(w.message) for w in seen), "torch no longer warns: drop the filters"
    from tinyprec.quant.exact_int import quiet_leafspec  # what importing tflm_exact's module installs

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_leafspec()
        tflm_exact(converted)
    assert not [w for w in seen if "LeafSpec" in str(w.message)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()  # what `tinyprec` runs first: its filter outranks "always" once installed
        copy.deepcopy(converted)
    assert not [w for w in seen if "LeafSpec" in str(w.message)]
