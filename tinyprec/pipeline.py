"""The pipeline: run the four stages of a recipe in order, skipping the ones already finished.

Each stage's outputs are cached by a hash of its inputs: its recipe sections, the sha256 of the upstream
artifacts it reads, and the tinyprec version (see :mod:`tinyprec.stamps`). A stage whose stamp matches is
skipped and reported as ``cached``; killing a run at any moment leaves no stamp for the stage in flight,
so the next run redoes exactly that stage (``resume`` lets training continue from its last checkpoint).

>>> from tinyprec.pipeline import STAGES
>>> STAGES
('train', 'qat', 'export', 'validate')
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyprec import manifest
from tinyprec._io import sha256_file
from tinyprec.errors import RecipeError
from tinyprec.recipe import Recipe, load_recipe
from tinyprec.stamps import inputs_hash, read_valid_stamp, write_stamp

STAGES: tuple[str, ...] = ("train", "qat", "export", "validate")

# The upstream files each stage reads: they are part of its inputs hash.
_READS: dict[str, tuple[str, ...]] = {
    "train": (),
    "qat": ("train/model_fp32.pt",),
    "export": ("train/model_fp32.pt", "quant/converted.pt2"),
    "validate": ("train/model_fp32.pt", "quant/converted.pt2", "quant/model_float.pt", "model/model_int8.tflite",
                 "model/model_int8.onnx", "model/model_fp32.onnx", "model/ir_sources.json"),
}
# The recipe sections each stage depends on.
_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("model", "data", "train"),
    "qat": ("model", "data", "quant"),
    "export": ("model", "data", "quant", "export"),  # quant: int4_max_scratch splits INT4 layers at export
    "validate": ("model", "data", "validate"),
}


@dataclass(frozen=True)
class StageOutcome:
    """One stage of a run: ``ran`` or ``cached``, how long it took, and its key figures."""

    stage: str
    status: str
    seconds: float
    summary: Mapping[str, Any]


@dataclass(frozen=True)
class RunResult:
    """What :func:`run_recipe` did: the stages, the run folder, the headline figures and the gate."""

    recipe: str
    out_dir: Path
    stages: tuple[StageOutcome, ...]
    summary: Mapping[str, Any] = field(default_factory=dict)

    @property
    def gate_passed(self) -> bool | None:
        """True/False once validation ran (or was cached); None when it was not among the stages."""
        value = self.summary.get("gate_passed")
        return None if value is None else bool(value)


Say = Callable[[str], None]


@dataclass(frozen=True)
class Hooks:
    """Optional progress callbacks, one per stage's own progress type (the CLI draws them)."""

    say: Say | None = None
    train: Callable[[Any], None] | None = None
    qat: Callable[[str], None] | None = None
    export: Callable[[str], None] | None = None
    validate: Callable[[str, int, int], None] | None = None


def parse_stages(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """Stage names in pipeline order from "train,qat" or a list; None means all four."""
    if text is None:
        return STAGES
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [n for n in names if n not in STAGES]
    if unknown or not names:
        raise RecipeError(f"--stages: unknown stage(s) {', '.join(unknown) or '(none)'}; choose from {','.join(STAGES)}")
    return tuple(s for s in STAGES if s in names)


def _section_dict(recipe: Recipe, name: str) -> Any:
    value = dataclasses.asdict(getattr(recipe, name))
    return {k: str(v) if isinstance(v, Path) else v for k, v in value.items()}


def stage_inputs(recipe: Recipe, out_dir: Path, stage: str) -> str:
    """The inputs hash of ``stage``: recipe sections + seed, upstream artifact digests, tinyprec version."""
    from tinyprec import __version__

    sections = {s: _section_dict(recipe, s) for s in _SECTIONS[stage]}
    reads = {}
    for rel in _READS[stage]:
        path = out_dir / rel
        reads[rel] = sha256_file(path) if path.is_file() else None
    return inputs_hash(stage, sections, recipe.seed, reads, __version__)


class _Context:
    """Objects shared between stages of one run, loaded lazily from the run folder when a stage was cached."""

    def __init__(self, recipe: Recipe, out_dir: Path) -> None:
        self.recipe, self.out_dir = recipe, out_dir
        self._dataset: Any = None
        self.model_fp32: Any = None
        self.converted: Any = None

    @property
    def dataset(self) -> Any:
        if self._dataset is None:
            from tinyprec.data import load_dataset

            base = self.recipe.path.parent if self.recipe.path else Path.cwd()
            self._dataset = load_dataset(self.recipe.data, self.recipe.seed, base_dir=base)
        return self._dataset

    def fresh_model(self) -> Any:
        from tinyprec.recipe import build_model_for
        from tinyprec.training import seed_everything

        seed_everything(self.recipe.seed)
        return build_model_for(self.recipe)

    def trained_model(self) -> Any:
        if self.model_fp32 is None:
            from tinyprec.training import load_weights

            model = self.fresh_model()
            model.load_state_dict(load_weights(self.out_dir / "train" / "model_fp32.pt"))
            self.model_fp32 = model.eval()
        return self.model_fp32

    def converted_model(self) -> Any:
        if self.converted is None:
            from tinyprec.quant import load_converted

            self.converted = load_converted(self.out_dir)
        return self.converted


def _run_train(ctx: _Context, hooks: Hooks, resume: bool) -> tuple[list[Path], dict[str, Any]]:
    from tinyprec.quant.opcheck import check_before_training
    from tinyprec.training import train_model

    model = ctx.fresh_model()
    check_before_training(model, ctx.dataset, output_softmax=ctx.recipe.quant.output_softmax)
    r = train_model(model, ctx.dataset, ctx.recipe.train, ctx.out_dir, seed=ctx.recipe.seed,
                    resume=resume, progress=hooks.train)
    ctx.model_fp32 = r.model.eval()
    return [r.weights_path, r.checkpoint_path, r.metrics_path], {
        "test_accuracy": r.test_accuracy, "test_loss": r.test_loss, "precision": r.precision,
        "epochs": r.epochs_total, "skipped_steps": r.skipped_steps}


def _run_qat(ctx: _Context, hooks: Hooks, resume: bool) -> tuple[list[Path], dict[str, Any]]:
    from tinyprec.quant import quantize_model

    r = quantize_model(ctx.trained_model(), ctx.dataset, ctx.recipe.quant, ctx.out_dir, seed=ctx.recipe.seed,
                       progress=hooks.qat)
    ctx.converted = r.converted
    extra = [p for p in (r.program_path.parent / "model_float.pt",) if p.is_file()]
    return [r.program_path, r.qparams_path, r.metrics_path, *extra], {
        "mode": r.mode, "metric": r.metric, "fp32": r.fp32_accuracy, "fake_quant": r.fake_quant_accuracy,
        "ptq": r.ptq_accuracy, "precision": r.precision}


def _run_export(ctx: _Context, hooks: Hooks, resume: bool) -> tuple[list[Path], dict[str, Any]]:
    from tinyprec.exporting.stage import export_model

    r = export_model(ctx.recipe, ctx.converted_model(), ctx.trained_model(), ctx.dataset, ctx.recipe.export,
                     ctx.out_dir, progress=hooks.export)
    files = [r.tflite_path, r.ir_sources_path, *r.firmware.values()]
    files += [p for p in (r.onnx_int8_path, r.onnx_fp32_path) if p is not None]
    return files, {"tflite_bytes": r.tflite_bytes, "const_bytes": r.const_bytes, "arena_bytes": r.arena_bytes,
                   "ops": [t.value for t in r.graph.op_types()], "check": dict(r.check)}


def _run_validate(ctx: _Context, hooks: Hooks, resume: bool) -> tuple[list[Path], dict[str, Any]]:
    from tinyprec.validation import validate_model

    r = validate_model(ctx.recipe, ctx.out_dir, progress=hooks.validate)
    rep = r.report
    acc = rep.get("accuracy", {})
    res = rep.get("resources", {})
    summary = {
        "accuracy": acc, "metric": rep.get("metric"), "drop": rep.get("drop", {}), "gate_passed": rep["gate"]["passed"],
        "gate_failures": [c["message"] for c in rep["gate"]["checks"] if not c["passed"]],
        "flash_bytes": res.get("flash_bytes"),
        "arena_bytes": res.get("arena_bytes"), "ram_bytes": res.get("ram_bytes"),
        "board": res.get("board", {}).get("summary"), "latency_ms": res.get("latency_ms"),
        "agreement": rep.get("agreement", {}),
    }
    m = res.get("measured")
    if m:  # the firmware image built and run on the emulated core (the `mcu` runner)
        summary["measured"] = {"target": m["target"], "kernels": m["kernels"], "flash_bytes": m["flash"]["total_bytes"],
                               "ram_bytes": m["ram"]["total_bytes"], "arena_used_bytes": m["ram"]["arena_used_bytes"],
                               "instructions": m["instructions"]["per_inference"],
                               "latency_ms": (m.get("latency_estimate") or {}).get("ms")}
    return list(r.paths.values()), summary


_RUNNERS: dict[str, Callable[[_Context, Hooks, bool], tuple[list[Path], dict[str, Any]]]] = {
    "train": _run_train, "qat": _run_qat, "export": _run_export, "validate": _run_validate,
}


def default_out_dir(recipe: Recipe) -> Path:
    return Path("export") / recipe.name


def run_recipe(recipe: Recipe | str | Path, *, out_dir: str | Path | None = None,
               stages: Sequence[str] | str | None = None, resume: bool = False, force: bool = False,
               hooks: Hooks | None = None) -> RunResult:
    """Run ``stages`` (default all four) of a recipe into ``out_dir`` (default export/<recipe name>/).

    Finished stages whose inputs are unchanged are skipped; ``force`` reruns them. Returns the stages'
    outcomes and the headline figures; a failed validation gate is reported in ``summary``, not raised.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    out = Path(out_dir) if out_dir is not None else default_out_dir(recipe)
    out.mkdir(parents=True, exist_ok=True)
    hooks = hooks or Hooks()
    say = hooks.say or (lambda _m: None)
    _clear_leftovers(out)
    ctx = _Context(recipe, out)
    outcomes: list[StageOutcome] = []
    for stage in parse_stages(stages):
        inputs = stage_inputs(recipe, out, stage)
        stamp = None if force else read_valid_stamp(out, stage, inputs)
        if stamp is not None:
            say(f"{stage}: up to date, skipped (inputs unchanged since the last run)")
            outcomes.append(StageOutcome(stage, "cached", 0.0, stamp.summary))
            continue
        say(f"{stage}: running")
        t0 = time.perf_counter()
        files, summary = _RUNNERS[stage](ctx, hooks, resume)
        seconds = time.perf_counter() - t0
        write_stamp(out, stage, inputs, files, {**summary, "seconds": round(seconds, 2)})
        outcomes.append(StageOutcome(stage, "ran", seconds, summary))
        say(f"{stage}: done in {seconds:.1f} s")
    result = RunResult(recipe.name, out, tuple(outcomes), _headline(out, outcomes))
    manifest.record(out, {}, {"pipeline": {"recipe": str(recipe.path) if recipe.path else recipe.name,
                                           "stages": {o.stage: o.status for o in outcomes}}})
    return result


def _clear_leftovers(out: Path) -> None:
    """Remove temp files and staging folders that a killed run left (hidden names, never artifacts)."""
    import shutil

    for path in out.rglob(".*.tmp*"):
        if path.is_file():
            path.unlink(missing_ok=True)
    for path in out.glob(".export-*"):
        shutil.rmtree(path, ignore_errors=True)


def _headline(out: Path, outcomes: Sequence[StageOutcome]) -> dict[str, Any]:
    """FP32 vs int8-on-MCU accuracy, drop, flash, arena, board verdict and artifact paths."""
    by = {o.stage: o.summary for o in outcomes}
    head: dict[str, Any] = {}
    if "train" in by:
        head["fp32_accuracy"] = by["train"].get("test_accuracy")
    if "qat" in by:
        head["fp32_accuracy"] = by["qat"].get("fp32", head.get("fp32_accuracy"))
        head["fake_quant_accuracy"] = by["qat"].get("fake_quant")
        head["ptq_accuracy"] = by["qat"].get("ptq")
        head["quant_metric"] = by["qat"].get("metric")  # "accuracy", or "mse" for an autoencoder
    if "export" in by:
        head["tflite_bytes"] = by["export"].get("tflite_bytes")
        head["arena_bytes"] = by["export"].get("arena_bytes")
    if "validate" in by:
        v = by["validate"]
        acc = v.get("accuracy", {})
        head.update(metric=v.get("metric"), fp32_accuracy=acc.get("fp32", head.get("fp32_accuracy")),
                    mcu_accuracy=acc.get("tflm"),
                    emulator_accuracy=acc.get("emulator"), drop=v.get("drop", {}).get("tflm"),
                    flash_bytes=v.get("flash_bytes"), arena_bytes=v.get("arena_bytes", head.get("arena_bytes")),
                    board=v.get("board"), gate_passed=v.get("gate_passed"), gate_failures=v.get("gate_failures"))
        if v.get("measured"):  # the firmware image on the emulated core (the `mcu` runner)
            head["measured"] = v["measured"]
    arts = manifest.load(out).get("artifacts", {})
    head["artifacts"] = {role: str(out / meta["path"]) for role, meta in sorted(arts.items())}
    return head
