"""Stage 4: validate on emulated MCU inference: every runner side by side, per-layer error, resources, gate.

    python examples/04_validate_on_mcu.py
"""

from __future__ import annotations

from _common import ensure, out_dir, recipe
from tinyprec.validation import validate_model


def main() -> None:
    r = recipe()
    out = out_dir("digits_cnn")
    ensure(r, out, "train", "qat", "export")  # runs the earlier examples' stages when their files are missing
    result = validate_model(r, out)
    rep = result.report
    for runner, acc in rep["accuracy"].items():
        print(f"{runner:12s} {'-' if acc is None else f'{acc:.2f}%'}")
    print("TFLM vs emulator:", rep["agreement"]["tflm_vs_emulator"])
    print("worst layers by SQNR:")
    for row in sorted((x for x in rep["layers"] if x.get("sqnr_db") is not None), key=lambda x: x["sqnr_db"])[:3]:
        print(f"  {row.get('module') or row.get('tensor')}: {row['sqnr_db']:.1f} dB")
    res = rep["resources"]
    print(f"flash {res['flash_bytes']:,} B, RAM {res['ram_bytes']:,} B, board {res['board']['summary']}")
    print("gate", "passed" if rep["gate"]["passed"] else "FAILED", "; report:", result.paths.get("report_html"))


if __name__ == "__main__":
    main()
