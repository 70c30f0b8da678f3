"""The firmware on an emulated Cortex-M: built with arm-none-eabi-gcc against the TFLM tree in
../shared/third_party/tflm, run in qemu-system-arm (mps2-an386, Cortex-M4), outputs compared with
host TFLM exactly, golden vectors checked on the core, flash/RAM/instructions measured.

The TFLM library objects are cached under ~/.cache/tinyprec/tflm (keyed by tree, target, kernels,
flags, compiler): the first run on a machine compiles the core and the kernels the models need.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests._cli import run_cli
from tinyprec.mcu import firmware_build, toolchain
from tinyprec.mcu.emulated import McuMeasurement, compare_with_host, measure, random_inputs, write_bundle_for_tflite

REPO = Path(__file__).resolve().parents[1]
TREE = REPO.parent / "shared" / "third_party" / "tflm"
KERNELS = ("reference", "cmsis-nn")
SAMPLES = 100

_NO_TREE = pytest.mark.skipif(not (TREE / "tflm_sources.mk").is_file(),
                              reason=f"no TFLM tree at {TREE} (CI lays ../shared beside the clone)")
_NO_TOOLS = pytest.mark.skipif(not firmware_build.toolchain_available(),
                               reason=firmware_build.missing_toolchain_message(["arm-none-eabi-gcc / qemu-system-arm"]))


def needs_firmware(fn):  # noqa: ANN001, ANN201
    return _NO_TREE(_NO_TOOLS(fn))


def _check_measurement(m: McuMeasurement, n_ops: int, model_bytes: int) -> None:
    assert m.golden_count > 0 and m.golden_passed
    assert len(m.per_op) == n_ops  # one profiler event per op of the graph
    per_op_sum = sum(n for _, _, n in m.per_op)
    assert 0.97 * m.profiled_instructions <= per_op_sum <= m.profiled_instructions
    spread = (m.instructions.max() - m.instructions.min()) / m.instructions_per_inference
    assert spread < 0.01  # int8 kernels do (nearly) the same work on every input
    s = m.sizes
    assert s.flash_total == m.elf["text"] + m.elf["data"]  # the map split accounts for every byte of the image
    assert model_bytes <= s.flash_model <= model_bytes + 16  # the C array (+ its length word)
    assert s.flash_tflm > 10_000 and s.flash_rest > 0
    assert 0 < m.arena_used_bytes <= s.arena_bytes <= s.bss
    assert 0 < m.stack_used_bytes < 32 * 1024


@pytest.fixture(scope="module")
def kws_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcu_kws")


@pytest.fixture(scope="module")
def kws_runs(kws_tflite: bytes, kws_folder: Path) -> dict[str, tuple[McuMeasurement, np.ndarray]]:
    folder = kws_folder
    bundle = write_bundle_for_tflite(kws_tflite, folder / "bundle", golden=4, where="kws_ref_model.tflite")
    x = random_inputs((49, 10, 1), np.int8, SAMPLES, seed=7)
    return {k: (measure(bundle, x, tree=TREE, target="cortex-m4", kernels=k, build_dir=folder / k), x) for k in KERNELS}


@needs_firmware
@pytest.mark.parametrize("kernels", KERNELS)
def test_mlperf_kws_on_cortex_m4_matches_host_tflm(kws_runs, kws_tflite: bytes, kernels: str) -> None:  # noqa: ANN001
    m, x = kws_runs[kernels]
    cmp = compare_with_host(kws_tflite, x, m.outputs)
    assert cmp.samples == SAMPLES and cmp.identical, cmp
    _check_measurement(m, 13, len(kws_tflite))
    assert [tag for _, tag, _ in m.per_op][:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert m.sizes.flash_golden >= 4 * (49 * 10 + 12)  # four golden inputs and outputs, apart from the rest


@needs_firmware
def test_cmsis_nn_runs_fewer_instructions_and_the_library_is_cached(kws_runs) -> None:  # noqa: ANN001
    ref, cmsis = kws_runs["reference"][0], kws_runs["cmsis-nn"][0]
    assert cmsis.instructions_per_inference * 3 < ref.instructions_per_inference
    assert cmsis.sizes.flash_tflm > ref.sizes.flash_tflm  # CMSIS-NN code comes on top of the shared core
    assert "cmsis_nn" in cmsis.sizes.flash_tflm_by_class and "cmsis_nn" not in ref.sizes.flash_tflm_by_class


@needs_firmware
def test_unicorn_trace_counts_what_qemu_counts(kws_runs, kws_folder: Path) -> None:  # noqa: ANN001
    pytest.importorskip("unicorn")
    pytest.importorskip("capstone")
    from tinyprec.mcu.trace import instruction_mix, trace_invokes

    traces, console = trace_invokes(kws_folder / "cmsis-nn" / "app.elf", flash_reads=True, run_to_end=True)
    mix = instruction_mix(traces[0])
    qemu = kws_runs["cmsis-nn"][0].instructions
    assert "golden vectors: 4 checked, 0 output elements differ -> PASS" in console
    assert abs(mix.instructions - np.median(qemu)) < 0.002 * mix.instructions  # golden vector 0 vs random samples
    assert mix.by_class["mul"] > 2_656_768 / 2 * 0.9  # CMSIS-NN: one SMLAD per two of KWS's 2.66 M MACs
    assert mix.instructions < mix.base_cycles < 1.5 * mix.instructions
    assert 0 < mix.refills < mix.by_class["branch"] and mix.flash_reads > 0


@needs_firmware
def test_every_intermediate_tensor_matches_host_tflm(kws_tflite: bytes, kws_runs, tmp_path: Path) -> None:  # noqa: ANN001
    from tinyprec.mcu.emulated import diff_by_op

    x = kws_runs["cmsis-nn"][1]
    bundle = write_bundle_for_tflite(kws_tflite, tmp_path / "bundle", golden=1)
    rows = diff_by_op(bundle, kws_tflite, x[0], tree=TREE, target="cortex-m4", kernels="cmsis-nn", build_dir=tmp_path / "dump")
    assert [r.index for r in rows] == list(range(13))  # every op's output came back from the core
    assert [r.op for r in rows][-3:] == ["RESHAPE", "FULLY_CONNECTED", "SOFTMAX"]
    assert all(r.differing_elements == 0 for r in rows), [r for r in rows if r.differing_elements]


@needs_firmware
def test_second_build_compiles_nothing(kws_tflite: bytes, tmp_path: Path) -> None:
    bundle = write_bundle_for_tflite(kws_tflite, tmp_path / "bundle", golden=1)
    tools = firmware_build.find_toolchain()
    tree = firmware_build.check_tree(TREE)
    ops = firmware_build.bundle_ops(bundle)
    first = firmware_build.build_library(tree, firmware_build.TARGETS["cortex-m4"], "reference", ops, tools)
    again = firmware_build.build_library(tree, firmware_build.TARGETS["cortex-m4"], "reference", ops, tools)
    assert again.compiled == 0 and again.objects == first.objects
    assert all(obj.is_file() for obj, _ in again.objects)


QUICK_DIGITS = """name = "digits_mcu"
seed = 0
[model]
arch = "digits_cnn"
[data]
name = "digits"
[train]
epochs = 2
precision = "fp32"
[quant]
mode = "ptq"
[export]
golden_vectors = 3
onnx = false
"""


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, Path]:
    from tinyprec.data import load_dataset
    from tinyprec.formats.tflite_reader import read_tflite
    from tinyprec.pipeline import run_recipe
    from tinyprec.recipe import load_recipe
    from tinyprec.validation.runners import quantize, to_ir_layout

    folder = tmp_path_factory.mktemp("mcu_digits")
    recipe = folder / "digits_mcu.toml"
    recipe.write_text(QUICK_DIGITS)
    out = folder / "run"
    run_recipe(recipe, out_dir=out, stages="train,qat,export")
    r = load_recipe(recipe)
    ds = load_dataset(r.data, r.seed, folder)
    graph = read_tflite((out / "model" / "model_int8.tflite").read_bytes())
    qp = graph.tensors[graph.inputs[0]].qparams
    x = quantize(to_ir_layout(ds.preprocess.apply(ds.test.x[:120]), "NCHW"), qp)
    return out, x, recipe


@needs_firmware
@pytest.mark.parametrize("kernels", KERNELS)
def test_digits_cnn_export_on_cortex_m4_matches_host_tflm(digits_run, kernels: str) -> None:  # noqa: ANN001
    out, x, _ = digits_run
    tflite = (out / "model" / "model_int8.tflite").read_bytes()
    m = measure(out / "firmware", x, tree=TREE, target="cortex-m4", kernels=kernels,
                build_dir=out / "mcu" / f"cortex-m4-{kernels}")  # the validation runner's build folder: reused there
    cmp = compare_with_host(tflite, x, m.outputs)
    assert cmp.samples == 120 and cmp.identical, cmp
    from tinyprec.formats.tflite_reader import read_tflite

    _check_measurement(m, len(read_tflite(tflite).ops), len(tflite))


@needs_firmware
def test_cli_on_a_run_folder_prints_json(digits_run, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    out, _, _ = digits_run
    code, stdout, err = run_cli(["mcu", str(out), "--kernels", "cmsis-nn", "--samples", "20", "--tflm-tree", str(TREE),
                                 "--build-dir", str(out / "mcu" / "cortex-m4-cmsis-nn"), "--json"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["golden"]["passed"] and doc["host_tflm"]["identical_samples"] == 20
    assert doc["flash"]["total_bytes"] == doc["flash"]["elf_text_plus_data"]
    assert doc["latency_estimate"]["ms"] > 0 and "estimate" in doc["latency_estimate"]["label"]
    assert doc["build"]["library_compiled"] == 0  # the library and the app (same bundle) come from the caches
    recorded = json.loads((out / "manifest.json").read_text())["mcu_measured"]["cortex-m4/cmsis-nn"]
    assert recorded["flash_bytes"] == doc["flash"]["total_bytes"] and recorded["golden_passed"] is True


@needs_firmware
def test_validation_runs_the_mcu_runner_when_a_tree_is_found(digits_run, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from tinyprec.pipeline import run_recipe

    out, _, recipe = digits_run
    monkeypatch.setenv(firmware_build.TREE_ENV, str(TREE))
    result = run_recipe(recipe, out_dir=out, stages="validate")
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["runners"]["mcu"]["ran"], report["runners"]["mcu"]["note"]
    assert report["accuracy"]["mcu"] == report["accuracy"]["tflm"]
    assert report["agreement"]["tflm_vs_mcu"]["identical_outputs"] == 100.0
    assert report["agreement"]["emulator_vs_mcu"]["identical_outputs"] == 100.0
    measured = report["resources"]["measured"]
    assert measured["golden"]["passed"] and measured["kernels"] == "cmsis-nn"
    assert measured["flash"]["model_bytes"] >= report["resources"]["model_bytes"]
    assert measured["ram"]["arena_used_bytes"] <= measured["ram"]["arena_bytes"]
    assert "Measured on cortex-m4" in (out / "report" / "report.md").read_text()
    # the board gate checks the measured firmware image, and says so
    board = report["resources"]["board"]
    assert board["summary"].startswith(f"{board['name']}: fits: RAM {measured['ram']['total_bytes']}/")
    assert f"flash {measured['flash']['total_bytes']}/" in board["summary"]
    assert report["resources"]["gate_source"].startswith("measured: firmware image on the emulated cortex-m4")
    fit = next(c for c in report["gate"]["checks"] if c["name"] == "board_fit")
    assert fit["passed"] and "(measured: firmware image" in fit["message"]
    head = result.summary["measured"]  # what `tinyprec run` prints in its table
    assert (head["arena_used_bytes"], head["flash_bytes"]) == (measured["ram"]["arena_used_bytes"],
                                                               measured["flash"]["total_bytes"])
    from tinyprec.cli.run import _measured_rows

    rows = dict(_measured_rows(head))
    assert rows["TFLM arena used on the core (cortex-m4, cmsis-nn, measured)"] == f"{head['arena_used_bytes']:,} B"
    monkeypatch.delenv(firmware_build.TREE_ENV)
    run_recipe(recipe, out_dir=out, stages="validate", force=True)
    report = json.loads((out / "report" / "report.json").read_text())
    assert not report["runners"]["mcu"]["ran"] and "TINYPREC_TFLM_TREE" in report["runners"]["mcu"]["note"]
    assert "measured" not in report["resources"] and report["resources"]["gate_source"] == "estimated"
    assert f"RAM {report['resources']['ram_bytes']}/" in report["resources"]["board"]["summary"]


@_NO_TOOLS
def test_missing_tree_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(firmware_build.TREE_ENV, raising=False)
    code, _, err = run_cli(["mcu", str(tmp_path), "--tflm-tree", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "not a standalone TFLM tree" in err and "--tflm-tree" in err
    code, _, err = run_cli(["mcu", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--tflm-tree" in err


@_NO_TREE
def test_missing_toolchain_names_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(toolchain.shutil, "which", lambda name: None if "arm-none-eabi" in name else real(name))
    with pytest.raises(firmware_build.ToolchainMissing) as info:
        firmware_build.find_toolchain()
    msg = str(info.value)
    assert "\n" not in msg and all(pkg in msg for pkg in firmware_build.DEBIAN_PACKAGES)
    from tinyprec.mcu.emulated import options_from_env

    monkeypatch.setenv(firmware_build.TREE_ENV, str(TREE))
    opts = options_from_env()
    assert opts.tree is None and "gcc-arm-none-eabi" in opts.off_reason


def test_cpi_fit_and_instruction_estimate() -> None:
    from tinyprec.mcu import latency

    instr = {"kws": 1e6, "ic": 4e6, "vww": 3e6}
    pub = {"kws": 25.0, "ic": 100.0, "vww": 60.0}  # 3 cycles/instruction at 120 MHz for the fitted pair
    fit = latency.fit_cpi(instr, pub, fitted_on=("kws", "ic"))
    assert fit["cpi"] == pytest.approx(3.0)
    assert fit["relative_error"]["vww"] == pytest.approx(3e6 * 3 / 120e3 / 60.0 - 1)  # type: ignore[index]
    assert fit["role"] == {"kws": "fitted", "ic": "fitted", "vww": "held out"}
    m4 = latency.estimate_from_instructions(12e6, "cortex-m4@120", "cmsis-nn")
    assert m4["ms"] == pytest.approx(12e6 * latency.CPI_M4_CMSIS_NN / 120e3)
    m7 = latency.estimate_from_instructions(12e6, "cortex-m7@120", "reference")
    assert m7["ms"] < m4["ms"] and "scaled to cortex-m7" in str(m7["cpi_source"]) and "reference" in str(m7["cpi_source"])
