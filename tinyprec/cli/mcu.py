"""``tinyprec mcu RUN_DIR|MODEL.tflite --target cortex-m4|cortex-m7|cortex-m33 [--kernels reference|cmsis-nn]
[--tflm-tree DIR] [--samples N] [--data X.npz] [--json]``: the firmware on an emulated Cortex-M (QEMU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from tinyprec.cli.app import app, console, err_console


def _samples(path: Path | None, n: int, graph: Any, run_dir: Path | None) -> tuple[Any, str]:
    """The int8 samples to stream: from X.npz (int8, or raw floats preprocessed and quantized), else random."""
    import numpy as np

    from tinyprec.errors import DataError
    from tinyprec.mcu.emulated import random_inputs
    from tinyprec.validation.runners import quantize

    inp = graph.tensors[graph.inputs[0]]
    shape, dtype = tuple(inp.shape[1:]), inp.dtype.numpy
    if path is None:
        return random_inputs(shape, dtype, n, 0), f"{n} random {np.dtype(dtype).name} inputs (seed 0)"
    try:
        with np.load(path, allow_pickle=False) as z:
            x = np.asarray(z["x"])
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{path}: needs an array x (samples, batch first) in a .npz ({type(err).__name__})") from None
    x = x[:n]
    if x.dtype != dtype:
        if x.dtype.kind != "f" or inp.qparams is None:
            raise DataError(f"{path}: x is {x.dtype}; give {np.dtype(dtype).name} inputs or raw floats")
        mean, std = 0.0, 1.0
        manifest = (run_dir / "manifest.json") if run_dir is not None else None
        if manifest is not None and manifest.is_file():
            pre = json.loads(manifest.read_text()).get("preprocess") or {}
            mean, std = pre.get("mean", 0.0), pre.get("std", 1.0)
        x = quantize((x.astype(np.float32) - np.asarray(mean, np.float32)) / np.asarray(std, np.float32), inp.qparams)
    if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise DataError(f"{path}: samples have shape {x.shape[1:]}; the model's input is {shape}")
    return x.reshape((x.shape[0], *shape)), f"{x.shape[0]} samples from {path}"


@app.command("mcu")
def mcu_command(
    model: Path = typer.Argument(..., help="A run folder (model/model_int8.tflite + firmware/) or an int8 .tflite."),
    target: str = typer.Option("cortex-m4", "--target", help="cortex-m4 (QEMU mps2-an386), cortex-m7 (mps2-an500), "
                                                             "cortex-m33 (mps2-an505)."),
    kernels: str = typer.Option("cmsis-nn", "--kernels", help="reference or cmsis-nn (TFLM's optimized Arm kernels)."),
    tflm_tree: Path = typer.Option(None, "--tflm-tree", help="Standalone TFLM source tree (default $TINYPREC_TFLM_TREE)."),
    samples: int = typer.Option(100, "--samples", help="Test samples to stream through the firmware."),
    data: Path = typer.Option(None, "--data", help=".npz with x: int8 inputs, or raw floats (preprocessed and quantized "
                                                   "like the firmware does); default random inputs."),
    build_dir: Path = typer.Option(None, "--build-dir", help="Where the app builds (default RUN_DIR/mcu/<target>-<kernels>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the measurement as JSON."),
) -> None:
    """Build the firmware for a Cortex-M core with TFLM, run it in QEMU: golden vectors bit for bit, N samples
    against host TFLM, measured flash, RAM and instructions (exit 1 when any output differs)."""
    from tinyprec.errors import ArtifactError, DataError, ValidationGateError
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.mcu import emulated
    from tinyprec.mcu.firmware_build import TREE_ENV, find_toolchain, resolve_tree
    from tinyprec.mcu.latency import estimate_from_instructions

    if samples < 0:
        raise DataError(f"--samples {samples}: give 0 or more")
    find_toolchain()
    tree = resolve_tree(tflm_tree)
    if tree is None:
        raise DataError(f"no TFLM tree: pass --tflm-tree DIR or set {TREE_ENV} (e.g. ../shared/third_party/tflm)")
    if model.is_dir():
        run_dir: Path | None = model
        tflite_path = model / "model" / "model_int8.tflite"
        bundle = model / "firmware"
        if not tflite_path.is_file() or not (bundle / "op_resolver.h").is_file():
            raise ArtifactError(f"{model}: no model/model_int8.tflite and firmware/ bundle; run `tinyprec export` first")
        base = build_dir or model / "mcu" / f"{target}-{kernels}"
    elif model.is_file():
        run_dir, tflite_path = None, model
        base = build_dir or Path("export") / model.stem / "mcu" / f"{target}-{kernels}"
        bundle = emulated.write_bundle_for_tflite(model.read_bytes(), base / "bundle", where=str(model))
    else:
        raise ArtifactError(f"{model}: no such run folder or .tflite file")
    tflite = tflite_path.read_bytes()
    graph = read_tflite(tflite, where=str(tflite_path))
    x, described = _samples(data, samples, graph, run_dir)
    if not as_json:
        err_console.print(f"building for {target} ({kernels} kernels) against {tree} ...")
    m = emulated.measure(bundle, x if len(x) else None, tree=tree, target=target, kernels=kernels, build_dir=base)
    if run_dir is not None and (run_dir / "manifest.json").is_file():
        emulated.record_in_manifest(run_dir, m)
    cmp = emulated.compare_with_host(tflite, x, m.outputs, where=str(tflite_path)) if len(x) else None
    facts = m.as_dict()
    facts["inputs"] = described
    facts["host_tflm"] = None if cmp is None else {"identical_samples": cmp.identical_samples, "samples": cmp.samples,
                                                   "differing_elements": cmp.differing_elements,
                                                   "max_abs_diff": cmp.max_abs_diff,
                                                   "first_differing_sample": cmp.first_differing_sample}
    est = estimate_from_instructions(m.instructions_per_inference, target, kernels)
    facts["latency_estimate"] = est
    if as_json:
        console.print_json(json.dumps(facts))
    else:
        fl, ram, ins = facts["flash"], facts["ram"], facts["instructions"]
        console.print(f"{m.target} on QEMU {m.board}, {m.kernels} kernels: golden vectors "
                      f"{'PASS' if m.golden_passed else 'FAIL'} ({m.golden_count} checked, {m.golden_mismatches} elements differ)")
        if cmp is not None:
            console.print(f"{described}: {cmp.identical_samples}/{cmp.samples} outputs identical to host TFLM")
        console.print(f"instructions per inference {ins['per_inference']:,} (measured, +/-{m.instructions_per_tick:g}); "
                      f"~{est['ms']:.2f} ms at {est['mhz']:g} MHz [dim]({est['label']})[/dim]")
        console.print(f"flash {fl['total_bytes']:,} B (model {fl['model_bytes']:,} + TFLM {fl['tflm_bytes']:,} + golden vectors {fl['golden_vectors_bytes']:,} + rest "
                      f"{fl['rest_bytes']:,}), RAM {ram['total_bytes']:,} B (.data {ram['data_bytes']:,} + .bss "
                      f"{ram['bss_bytes']:,} incl. arena {ram['arena_bytes']:,}, {ram['arena_used_bytes']:,} used, + stack "
                      f"{ram['stack_used_bytes']:,}) [dim](measured)[/dim]")
        top = sorted(m.per_op, key=lambda r: -r[2])[:5]
        console.print("heaviest ops: " + ", ".join(f"#{i} {tag} {n:,}" for i, tag, n in top))
        console.print(f"library: {m.library_compiled} of {m.library_objects} objects compiled "
                      f"({m.library_seconds:.1f} s), app {m.app_seconds:.1f} s, QEMU {m.run_seconds:.2f} s")
    if not m.golden_passed:
        raise ValidationGateError(f"golden vectors differ on {m.target} ({m.kernels}): {m.golden_mismatches} output elements")
    if cmp is not None and not cmp.identical:
        k = int(cmp.first_differing_sample or 0)
        rows = emulated.diff_by_op(bundle, tflite, x[k], tree=tree, target=target, kernels=kernels, build_dir=base / "dump")
        first = next((r for r in rows if r.differing_elements), None)
        where = (f"; first differing op #{first.index} {first.op} ({first.differing_elements} elements, max |diff| "
                 f"{first.max_abs_diff})" if first is not None else "")
        raise ValidationGateError(f"{cmp.samples - cmp.identical_samples} of {cmp.samples} samples differ from host TFLM on "
                                  f"{m.target} ({m.kernels}), first at sample {k} (max |diff| {cmp.max_abs_diff}){where}")
