"""``tinyprec emulate MODEL.tflite --input X.npy --output Y.npy [--rounding double|single]``."""

from __future__ import annotations

from pathlib import Path

import typer

from tinyprec.cli.app import app, console


def _load_npy(path: Path) -> object:
    import numpy as np

    from tinyprec.errors import DataError

    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; pass a .npy array saved with numpy.save") from None
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable .npy array ({str(err).splitlines()[0][:100]})") from None


@app.command("emulate")
def emulate_command(
    model: Path = typer.Argument(..., help="An int8 .tflite model (ours or TensorFlow's converter's)."),
    inputs: list[Path] = typer.Option(..., "--input", "-i",
                                      help="Input batch .npy (int8, the model's input shape with a leading "
                                           "batch dimension); repeat for models with several inputs."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write output 0 as .npy (int8, batch first)."),
    rounding: str = typer.Option("double", "--rounding",
                                 help="double (TFLM's default build) or single (TFLITE_SINGLE_ROUNDING)."),
    taps: Path | None = typer.Option(None, "--taps", help="Also save every intermediate tensor to this .npz."),
) -> None:
    """Run a batch through the bit-exact TFLM int8 emulator and save the outputs."""
    import time

    import numpy as np

    from tinyprec._io import atomic_path
    from tinyprec.emulator import Emulator
    from tinyprec.errors import DataError, ModelFormatError
    from tinyprec.formats.tflite_reader import read_tflite

    if rounding not in ("double", "single"):
        raise DataError(f"--rounding {rounding!r}: use double or single")
    try:
        data = model.read_bytes()
    except OSError as err:
        raise ModelFormatError(f"{model}: cannot read the model ({err.strerror or err})") from None
    graph = read_tflite(data, where=str(model))
    emulator = Emulator(graph, rounding=rounding)
    arrays = [_load_npy(p) for p in inputs]
    start = time.perf_counter()
    outs = emulator.run_all(arrays)  # type: ignore[arg-type]
    seconds = time.perf_counter() - start
    written = []
    for k, y in enumerate(outs):
        path = output if k == 0 else output.with_name(f"{output.stem}.{k}{output.suffix or '.npy'}")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, y)
        written.append(f"{path} {tuple(y.shape)} {y.dtype}")
    if taps is not None:
        values = emulator.run_with_taps(arrays if len(arrays) > 1 else arrays[0])  # type: ignore[arg-type]
        with atomic_path(taps) as tmp, open(tmp, "wb") as f:
            np.savez(f, **values)  # type: ignore[arg-type]
        written.append(f"{taps} ({len(values)} tensors)")
    n = int(outs[0].shape[0]) if outs else 0
    console.print(f"emulated {n} sample(s) in {seconds:.3f} s ({rounding} rounding); wrote " + "; ".join(written))
