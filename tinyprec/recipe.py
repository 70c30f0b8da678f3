"""Recipes: one TOML file names the model, the data and the settings of every stage.

    name = "digits_cnn"          # optional, defaults to the file stem
    seed = 0
    [model]  arch = "digits_cnn"   (or module = "my_models.py:build")   [model.args] ...
    [data]   name = "digits" | "mnist1d" | "npz" | "synthetic" | "spoken_keywords" | "machine_sounds", ...
    [train] [quant] [export] [validate]

Every section is a frozen dataclass with defaults. Relative paths resolve against the recipe's folder.
A bad recipe raises :class:`RecipeError` naming the file, the key and what is allowed.
"""

from __future__ import annotations

import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

from tinyprec.errors import RecipeError

Precision = Literal["auto", "bf16", "fp16", "fp32"]


@dataclass(frozen=True)
class ModelConfig:
    """A zoo architecture (``arch`` + ``args``) or a user's ``module`` ("pkg.mod:fn" or "file.py:fn")."""

    arch: str | None = None
    module: str | None = None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from and how it is split and normalized."""

    name: Literal["digits", "mnist1d", "npz", "synthetic", "spoken_keywords", "machine_sounds"] = "digits"
    path: Path | None = None  # npz: arrays x, y (and optionally x_test, y_test, class_labels)
    shape: tuple[int, ...] | None = None  # synthetic: per-sample shape (C,H,W) | (C,L) | (F,)
    num_classes: int | None = None  # synthetic/npz; digits and mnist1d know theirs
    samples: int = 512  # synthetic: total samples before the split
    task: Literal["classification", "autoencoder"] = "classification"
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # digits/npz/synthetic (mnist1d has its own test split)
    normalize: bool = True  # standardize with train mean/std (recorded for firmware)
    class_labels: tuple[str, ...] | None = None
    speakers: tuple[int, ...] | None = None  # spoken_keywords: speakers in [train, val, test] (default 600, 40, 80)
    clips: tuple[int, ...] | None = None  # machine_sounds: clips per machine ID in [train, val, test] (default 120, 20, 40)


@dataclass(frozen=True)
class AugmentConfig:
    """``[train.augment]``: what to do to each training batch (all zero: nothing)."""

    time_shift: int = 0  # shift each sample by up to +-time_shift frames
    time_masks: int = 0  # SpecAugment time masks per sample
    time_mask_width: int = 0  # each time mask covers 0..time_mask_width frames
    freq_masks: int = 0  # SpecAugment feature (frequency/coefficient) masks per sample
    freq_mask_width: int = 0  # each feature mask covers 0..freq_mask_width features
    noise_std: float = 0.0  # Gaussian noise, standard deviation in units of the normalized input
    freq_warp: float = 0.0  # MFCC inputs: stretch each sample's spectrum by a factor in [1 - w, 1 + w] (VTLP-like)
    probability: float = 1.0  # chance that a sample is augmented at all

    @property
    def active(self) -> bool:
        return self.probability > 0 and (self.time_shift > 0 or self.time_masks * self.time_mask_width > 0
                                         or self.freq_masks * self.freq_mask_width > 0 or self.noise_std > 0
                                         or self.freq_warp > 0)

    @property
    def spectral(self) -> bool:
        """Whether it needs (C, T, F) inputs (shift or masks)."""
        return (self.time_shift > 0 or self.time_masks * self.time_mask_width > 0
                or self.freq_masks * self.freq_mask_width > 0 or self.freq_warp > 0)

    def check(self, where: str = "train.augment") -> None:
        """One-line RecipeError for a negative count or width, a negative noise or a probability outside [0, 1]."""
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "probability":
                if not 0.0 <= value <= 1.0:
                    raise RecipeError(f"'{where}.probability' = {value!r} must be in [0, 1]")
            elif f.name == "freq_warp":
                if not 0.0 <= value < 0.5:
                    raise RecipeError(f"'{where}.freq_warp' = {value!r} must be in [0, 0.5) (0.1: factors 0.9 to 1.1)")
            elif value < 0:
                raise RecipeError(f"'{where}.{f.name}' = {value!r} must be >= 0 (0 turns it off)")
        for count, width in (("time_masks", "time_mask_width"), ("freq_masks", "freq_mask_width")):
            if (getattr(self, count) > 0) != (getattr(self, width) > 0):
                raise RecipeError(f"'{where}': set both '{count}' and '{width}' (or neither)")

    def check_shape(self, input_shape: tuple[int, ...], where: str = "train.augment") -> None:
        """One-line RecipeError when shifts or masks do not fit the model input (C, T, F)."""
        if not self.spectral:
            return
        if len(input_shape) != 3:
            raise RecipeError(f"'{where}': time shift and masks need (C, T, F) inputs such as MFCC, not "
                              f"{tuple(input_shape)}; use only noise_std")
        _, t, f = input_shape
        if self.time_shift >= t or self.time_mask_width > t:
            raise RecipeError(f"'{where}': time_shift and time_mask_width must be below the {t} time frames")
        if self.freq_mask_width > f:
            raise RecipeError(f"'{where}': freq_mask_width must be at most the {f} features")


@dataclass(frozen=True)
class TrainConfig:
    """Stage 1: mixed-precision training."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.9
    scheduler: Literal["cosine", "none"] = "cosine"
    label_smoothing: float = 0.0
    precision: Precision = "auto"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    grad_clip: float | None = None
    init_scale: float = 65536.0  # GradScaler's first loss scale (fp16 only)
    deterministic: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # [train.augment]; off by default


@dataclass(frozen=True)
class QuantConfig:
    """Stage 2: quantization-aware training (or post-training quantization)."""

    mode: Literal["qat", "ptq"] = "qat"
    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 64
    freeze_bn_epoch: int = 2
    freeze_observer_epoch: int = 2
    calibration: Literal["minmax", "moving_average", "percentile", "mse"] = "moving_average"
    calibration_batches: int = 16
    percentile: float = 99.99
    autocast: Precision = "auto"  # QAT's mixed-precision policy (stage 1's rules); recipes before issue 10 said precision
    per_channel: bool = True
    output_softmax: bool = False
    # Per-layer bits (tinyprec.quant.bits): recipe `precision = "int8" | "mixed" | "w4a8" | "a16w8"`.
    bits: Literal["int8", "mixed", "w4a8", "a16w8"] = "int8"
    # Recipe table [quant.overrides]: fnmatch pattern on the module path -> preset ("features.*" = "w4a8").
    overrides: tuple[tuple[str, str], ...] = ()
    # 4-bit weights: PTQ scales (and QAT's start) "mse" or "minmax"; QAT learns them (LSQ) unless false.
    weight_scales: Literal["mse", "minmax"] = "mse"
    learn_scales: bool = True
    # precision = "mixed" (tinyprec.quant.search): the accuracy the bits below int8 may cost on the
    # validation split (points below the all-int8 PTQ model, at PTQ; QAT then runs on the choice) and the RAM
    # budget (TFLM arena bytes, or a multiple of the all-int8 model's measured arena).
    search_max_drop: float = 0.5
    arena_budget: int | None = None
    arena_budget_ratio: float = 1.25
    # Split INT4 layers whose unpack scratch exceeds this many bytes into channel groups + CONCATENATION
    # at export (tinyprec.lowering.split; the search models it). None: no split.
    int4_max_scratch: int | None = None
    # The TFLM kernels the RAM budget is for: "reference" unpacks INT4 weights into arena scratch,
    # "cmsis-nn" (what Cortex-M products ship) reads them packed; the search confirms its choice on the
    # emulated Cortex-M when a TFLM tree and the Arm toolchain are found (tinyprec.mcu), else estimates.
    arena_kernels: Literal["reference", "cmsis-nn"] = "reference"


@dataclass(frozen=True)
class ExportConfig:
    """Stage 3: int8 .tflite, int8 ONNX and the firmware bundle."""

    float_io: bool = False
    golden_vectors: int = 4
    arena_margin_bytes: int = 1024
    onnx: bool = True


@dataclass(frozen=True)
class ValidateConfig:
    """Stage 4: accuracy on emulated MCU inference and the resource gate."""

    max_drop: float = 1.0
    max_recon_increase: float = 10.0  # autoencoders: allowed TFLM reconstruction MSE increase over FP32, percent
    board: str = "nrf52840"
    target: str = "cortex-m4"
    flash_budget: int | None = None
    ram_budget: int | None = None
    max_samples: int | None = None
    tflm_tree: Path | None = None  # TFLM source tree: turns on the `mcu` runner (firmware on QEMU)
    mcu_kernels: str = "cmsis-nn"  # kernels of the `mcu` runner: reference | cmsis-nn


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe. ``path`` is the file it came from (None when built in code)."""

    name: str
    path: Path | None
    model: ModelConfig
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    validate: ValidateConfig = field(default_factory=ValidateConfig)
    seed: int = 0


_SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "quant": QuantConfig,
    "export": ExportConfig,
    "validate": ValidateConfig,
}
_TOP_LEVEL = {"name": str, "seed": int, "description": str}


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a table"
    if tp is Path:
        return "a path (string)"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, base: Path) -> Any:
    """Return ``value`` converted to ``tp`` or raise TypeError."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, base)
            except TypeError:
                pass
        raise TypeError
    if origin is Literal:
        if value in typing.get_args(tp) and isinstance(value, str):
            return value
        raise TypeError
    if origin is tuple:
        (item,) = typing.get_args(tp)[:1]
        if not isinstance(value, list) or not value:
            raise TypeError
        return tuple(_convert(v, item, base) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise TypeError
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise TypeError
    if tp is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if tp is Path:
        if isinstance(value, str):
            p = Path(value).expanduser()
            return p if p.is_absolute() else (base / p).resolve()
        raise TypeError
    raise TypeError


def _section(cls: type, table: Any, where: str, section: str, base: Path) -> Any:
    if not isinstance(table, dict):
        raise RecipeError(f"{where}: [{section}] must be a table")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in hints:
            raise RecipeError(f"{where}: unknown key '{section}.{key}'; allowed: {', '.join(names)}")
        if is_dataclass(hints[key]):  # a sub-table such as [train.augment]
            kwargs[key] = _section(hints[key], value, where, f"{section}.{key}", base)
            continue
        try:
            kwargs[key] = _convert(value, hints[key], base)
        except TypeError:
            raise RecipeError(
                f"{where}: '{section}.{key}' = {value!r} is not valid; expected {_describe(hints[key])}"
            ) from None
    for f in fields(cls):
        if f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs:
            raise RecipeError(f"{where}: missing key '{section}.{f.name}'")
    built = cls(**kwargs)
    if hasattr(built, "check"):
        try:
            built.check(section)
        except RecipeError as err:
            raise RecipeError(f"{where}: {err}") from None
    return built


def _check_model(model: ModelConfig, where: str, base: Path) -> ModelConfig:
    from tinyprec.zoo import ARCHITECTURES

    if (model.arch is None) == (model.module is None):
        raise RecipeError(f"{where}: [model] needs exactly one of 'arch' (a zoo architecture) or 'module' (\"pkg.mod:fn\")")
    if model.arch is not None and model.arch not in ARCHITECTURES:
        raise RecipeError(
            f"{where}: unknown architecture 'model.arch' = '{model.arch}'; allowed: {', '.join(sorted(ARCHITECTURES))}"
        )
    if model.module is not None:
        target, _, attr = model.module.rpartition(":")
        if not target or not attr:
            raise RecipeError(f"{where}: 'model.module' = '{model.module}' must look like \"pkg.mod:fn\" or \"file.py:fn\"")
        if target.endswith(".py"):
            file = Path(target).expanduser()
            file = file if file.is_absolute() else (base / file).resolve()
            if not file.is_file():
                raise RecipeError(f"{where}: 'model.module' file not found: {file}")
            return ModelConfig(arch=None, module=f"{file}:{attr}", args=model.args)
    return model


def _check_data(data: DataConfig, where: str) -> None:
    if data.name == "npz":
        if data.path is None:
            raise RecipeError(f"{where}: data.name = 'npz' needs 'data.path' (a .npz file with arrays x and y)")
        if not data.path.is_file():
            raise RecipeError(f"{where}: 'data.path' file not found: {data.path}")
    if data.name == "machine_sounds" and data.task != "autoencoder":
        raise RecipeError(f"{where}: data.name = 'machine_sounds' is an anomaly-detection autoencoder task; "
                          "add 'data.task = \"autoencoder\"'")
    if data.name == "synthetic" and data.shape is None:
        raise RecipeError(f"{where}: data.name = 'synthetic' needs 'data.shape', e.g. shape = [1, 49, 10]")
    if not (0.0 <= data.val_fraction < 1.0 and 0.0 <= data.test_fraction < 1.0
            and data.val_fraction + data.test_fraction < 1.0):
        raise RecipeError(f"{where}: 'data.val_fraction' + 'data.test_fraction' must be in [0, 1)")


def _quant_table(table: dict[str, Any], where: str) -> dict[str, Any]:
    """[quant] as QuantConfig fields: `precision` is the per-layer bits (QuantConfig.bits; the old autocast
    values get a one-line error), [quant.overrides] a table of pattern -> preset."""
    from tinyprec.quant.bits import PRESETS, check_bits

    table = dict(table)
    if "bits" in table:
        raise RecipeError(f"{where}: unknown key 'quant.bits'; the recipe spells it 'quant.precision'")
    if "precision" in table:
        value = table.pop("precision")
        if not isinstance(value, str):
            raise RecipeError(f"{where}: 'quant.precision' = {value!r} is not valid; expected a string")
        check_bits(value, f"{where}: 'quant.precision'")
        table["bits"] = value
    if "overrides" in table:
        overrides = table.pop("overrides")
        if not isinstance(overrides, dict):
            raise RecipeError(f"{where}: [quant.overrides] must be a table of \"pattern\" = \"preset\"")
        for pattern, name in overrides.items():
            if name not in PRESETS:
                raise RecipeError(f"{where}: 'quant.overrides.\"{pattern}\"' = {name!r} is not valid; expected one "
                                  f"of {', '.join(PRESETS)}")
        if overrides:
            table["overrides"] = [[k, v] for k, v in overrides.items()]
    return table


def parse_recipe(doc: dict[str, Any], *, where: str = "<recipe>", base: Path | None = None,
                 default_name: str = "recipe") -> Recipe:
    """Build a Recipe from an already-parsed TOML document (``where`` names it in errors)."""
    base = Path(base) if base is not None else Path.cwd()
    top: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "quant" and isinstance(value, dict):
            value = _quant_table(value, where)
        if key in _SECTIONS:
            sections[key] = _section(_SECTIONS[key], value, where, key, base)
        elif key in _TOP_LEVEL:
            if not isinstance(value, _TOP_LEVEL[key]) or isinstance(value, bool):
                raise RecipeError(f"{where}: '{key}' = {value!r} is not valid; expected {_TOP_LEVEL[key].__name__}")
            top[key] = value
        else:
            allowed = ", ".join([*_TOP_LEVEL, *(f"[{s}]" for s in _SECTIONS)])
            raise RecipeError(f"{where}: unknown key '{key}'; allowed: {allowed}")
    if "model" not in sections:
        raise RecipeError(f"{where}: missing section [model] (arch = \"digits_cnn\" or module = \"pkg.mod:fn\")")
    model = _check_model(sections.pop("model"), where, base)
    recipe = Recipe(name=top.get("name", default_name), path=None, model=model, seed=top.get("seed", 0), **sections)
    _check_data(recipe.data, where)
    if recipe.quant.arena_kernels == "cmsis-nn" and recipe.quant.int4_max_scratch is not None:
        raise RecipeError(f"{where}: 'quant.int4_max_scratch' splits INT4 layers for the reference kernels' unpack "
                          "scratch; CMSIS-NN kernels need none: drop it or set quant.arena_kernels = \"reference\"")
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe TOML file.

    >>> r = load_recipe(Path(__file__).resolve().parents[1] / "models" / "digits_cnn.toml")
    >>> (r.name, r.model.arch, r.data.name)
    ('digits_cnn', 'digits_cnn', 'digits')
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise RecipeError(f"{where}: recipe file not found; pass a .toml file such as models/digits_cnn.toml")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise RecipeError(f"{where}: not valid TOML ({err})") from None
    recipe = parse_recipe(doc, where=where, base=path.resolve().parent, default_name=path.stem)
    return Recipe(**{**{f.name: getattr(recipe, f.name) for f in fields(Recipe)}, "path": path.resolve()})


def build_model_for(recipe: Recipe) -> Any:
    """The recipe's torch.nn.Module: a zoo architecture, or the user's callable called with ``model.args``."""
    from tinyprec.zoo import build_model

    where = str(recipe.path) if recipe.path else "<recipe>"
    if recipe.model.arch is not None:
        try:
            return build_model(recipe.model.arch, recipe.model.args)
        except RecipeError as err:
            raise RecipeError(f"{where}: {err}") from None
    return _build_user_model(recipe.model, where)


def _build_user_model(model: ModelConfig, where: str) -> Any:
    import importlib
    import importlib.util

    from torch import nn

    assert model.module is not None
    target, _, attr = model.module.rpartition(":")
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        else:
            mod = importlib.import_module(target)
    except ImportError as err:
        raise RecipeError(f"{where}: 'model.module' cannot import '{target}' ({err}); check the name and sys.path") from None
    except Exception as err:  # noqa: BLE001 - the user's module raised while loading: report it as theirs
        raise _user_code_error(err, f"{where}: 'model.module': importing '{target}' failed") from None
    fn = getattr(mod, attr, None)
    if not callable(fn):
        raise RecipeError(f"{where}: 'model.module': '{target}' has no callable '{attr}'")
    import inspect

    try:
        inspect.signature(fn).bind(**model.args)
    except TypeError as err:
        raise RecipeError(f"{where}: 'model.args' do not fit {model.module} ({err})") from None
    except ValueError:
        pass  # no signature to check (a builtin); the call below reports a mismatch
    try:
        built = fn(**model.args)
    except Exception as err:  # noqa: BLE001 - the user's builder raised: their frames and one line
        raise _user_code_error(err, f"{where}: 'model.module' {model.module} raised while building the model") from None
    if not isinstance(built, nn.Module):
        raise RecipeError(f"{where}: 'model.module' {model.module} returned {type(built).__name__}, not a torch.nn.Module")
    return built


def _user_code_error(err: BaseException, what: str) -> Exception:
    """A :class:`UserCodeError` carrying only the traceback frames outside tinyprec and site-packages."""
    import traceback

    from tinyprec.errors import UserCodeError

    ours = str(Path(__file__).resolve().parent)
    frames = [f for f in traceback.extract_tb(err.__traceback__)
              if not f.filename.startswith(ours) and "site-packages" not in f.filename
              and not f.filename.startswith("<frozen")]
    details = "".join(["Traceback (the model code's own frames):\n", *traceback.format_list(frames)]) if frames else ""
    first = str(err).splitlines()[0] if str(err) else ""
    return UserCodeError(f"{what}: {type(err).__name__}" + (f": {first}" if first else ""), details)


__all__ = [
    "DataConfig", "ExportConfig", "ModelConfig", "QuantConfig", "Recipe", "TrainConfig", "ValidateConfig",
    "build_model_for", "load_recipe", "parse_recipe",
]
