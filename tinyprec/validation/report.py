"""Validation reports: report.json (machine readable), report.md, and a self-contained report.html.

The HTML embeds its plots (accuracy per runner, per-layer SQNR, confusion matrix) as base64 PNG, so
the single file can be attached to a CI run or mailed around.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from tinyprec._io import atomic_write_text


def _clean(obj: Any) -> Any:
    """JSON-safe: non-finite floats become None, tuples lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):
        return _clean(obj.item())
    return obj


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _bytes(n: int | None) -> str:
    return "-" if n is None else f"{n:,} B ({n / 1024:.1f} KiB)"


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown."""
    lines = [f"# Validation report: {report['model']['name']}", ""]
    gate = report["gate"]
    lines += [f"**Gate: {'PASSED' if gate['passed'] else 'FAILED'}**", ""]
    for check in gate["checks"]:
        lines.append(f"- {'ok' if check['passed'] else 'FAIL'}: {check['message']}")
    data = report["data"]
    lines += ["", f"Data: {data['samples']} held-out samples ({data['split']}), task {data['task']}.", ""]
    ref = report.get("reference", "fp32")
    lines += ["## Runners", "", f"| runner | what | metric | drop vs {ref} (points) | seconds | note |", "|---|---|---|---|---|---|"]
    metric = report["metric"]
    for name, r in report["runners"].items():
        lines.append(f"| {name} | {r['title']} | {_fmt(report['accuracy'].get(name))} | "
                     f"{_fmt(report['drop'].get(name))} | {_fmt(r['seconds'])} | {r['note']} |")
    if report.get("reconstruction_mse"):
        lines += ["", "Reconstruction MSE per runner (model input vs output, normalized units): "
                  + ", ".join(f"{k} {v:.5g}" for k, v in report["reconstruction_mse"].items() if v is not None)]
    lines += ["", f"Metric: {metric}.", "", "## Agreement between runners", "",
              "| pair | identical int8 outputs (%) | identical top-1 (%) | max diff (LSB) |", "|---|---|---|---|"]
    for pair, a in report["agreement"].items():
        if a["identical_top1"] is None and a["identical_outputs"] is None:
            continue
        lines.append(f"| {pair} | {_fmt(a['identical_outputs'])} | {_fmt(a['identical_top1'])} | {_fmt(a['max_abs_diff_lsb'])} |")
    if report.get("layers"):
        lines += ["", f"## Per-layer error ({report.get('layers_taps', 'emulator')} taps vs FP32 activations)", "",
                  "Each int8 op output, dequantized, against the FP32 model's activation of the PyTorch module it "
                  "came from (after its folded BatchNorm and fused activation), in NHWC; LSB = that tensor's scale. "
                  "The FP32 reference is the stage-1 model: after QAT the differences include the fine-tuning of "
                  "the weights, not only rounding.", "",
                  "| # | op | module | shape | SQNR (dB) | max err (LSB) | mean err (LSB) |", "|---|---|---|---|---|---|---|"]
        for row in report["layers"]:
            lines.append(f"| {row['index']} | {row['op']} | `{row['module']}` | {'x'.join(map(str, row['shape']))} | "
                         f"{_fmt(row['sqnr_db'])} | {_fmt(row['max_err_lsb'])} | {_fmt(row['mean_err_lsb'], 3)} |")
    res = report["resources"]
    lines += ["", "## MCU resources", "",
              f"- flash: {_bytes(res['flash_bytes'])} = model {_bytes(res['model_bytes'])} + TFLM code "
              f"{_bytes(res['runtime_code_bytes_estimate'])} ({res['flash_note']})",
              f"- RAM: {_bytes(res['ram_bytes'])} = arena {_bytes(res['arena_bytes'])} (measured) + I/O buffers "
              f"{_bytes(res['io_buffer_bytes'])}",
              f"- op resolver: {', '.join(res['resolver'])}",
              f"- MACs per inference: {res['macs']:,}"]
    for tgt, ms in res["latency_ms"].items():
        lines.append(f"- latency on {tgt}: ~{ms:.1f} ms ({res['latency_label']})")
    lines.append(f"- board: {res['board']['summary']}")
    lines += _measured_lines(res.get("measured"))
    cm = report.get("confusion_matrix")
    if cm:
        labels = cm["labels"]
        lines += ["", f"## Confusion matrix ({cm['runner']}; rows true, columns predicted)", "",
                  "| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        for label, row in zip(labels, cm["matrix"]):
            lines.append(f"| **{label}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _measured_lines(m: dict[str, Any] | None) -> list[str]:
    """The measured-resources block: the firmware built and run on an emulated Cortex-M (`mcu` runner)."""
    if not m:
        return []
    fl, ram, ins, est = m["flash"], m["ram"], m["instructions"], m.get("latency_estimate") or {}
    lines = ["", f"## Measured on {m['target']} ({m['board']}, {m['kernels']} kernels)", "",
             "These figures come from the linked firmware image and its run in QEMU; where they exist they replace "
             "the estimates above.", "",
             f"- golden vectors: {'PASS' if m['golden']['passed'] else 'FAIL'} ({m['golden']['count']} checked, "
             f"{m['golden']['mismatched_elements']} output elements differ)",
             f"- flash: {_bytes(fl['total_bytes'])} = model {_bytes(fl['model_bytes'])} + TFLM {_bytes(fl['tflm_bytes'])} + "
             f"golden vectors {_bytes(fl.get('golden_vectors_bytes', 0))} + rest {_bytes(fl['rest_bytes'])} ({fl['label']})",
             f"- RAM: {_bytes(ram['total_bytes'])} = .data {_bytes(ram['data_bytes'])} + .bss {_bytes(ram['bss_bytes'])} "
             f"(arena {_bytes(ram['arena_bytes'])}, {_bytes(ram['arena_used_bytes'])} used) + stack "
             f"{_bytes(ram['stack_used_bytes'])} ({ram['label']})",
             f"- instructions per inference: {ins['per_inference']:,} ({ins['label']})"]
    if est:
        lines.append(f"- latency: ~{est['ms']:.2f} ms at {est['mhz']:g} MHz, CPI {est['cpi']:.2f} {est['cpi_source']} "
                     f"({est['label']})")
    if ins.get("per_op"):
        lines += ["", "| # | op | instructions | share |", "|---|---|---|---|"]
        total = sum(r["instructions"] for r in ins["per_op"]) or 1
        for r in ins["per_op"]:
            lines.append(f"| {r['index']} | {r['op']} | {r['instructions']:,} | {100.0 * r['instructions'] / total:.1f}% |")
    return lines


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def plots(report: dict[str, Any]) -> dict[str, str]:
    """Base64 PNGs: accuracy per runner, per-layer SQNR, confusion matrix (those that apply)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, str] = {}
    acc = {k: v for k, v in report["accuracy"].items() if v is not None}
    if acc:
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.bar(list(acc), list(acc.values()), color=["#777" if k == "fp32" else "#3a7" for k in acc])
        lo = min(acc.values())
        ax.set_ylim(max(0.0, lo - 5.0), max(acc.values()) + 1.0)
        for i, v in enumerate(acc.values()):
            ax.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=8)
        ax.set_ylabel(report["metric"])
        ax.set_title(f"{report['metric']} per runner ({report['data']['samples']} held-out samples)")
        ax.tick_params(axis="x", rotation=20)
        out["accuracy"] = _png(fig)
    layers = [r for r in report.get("layers") or [] if r["sqnr_db"] is not None]
    if layers:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(layers) + 1))
        ax.barh([f"{r['module']} ({r['op']})" for r in layers][::-1], [r["sqnr_db"] for r in layers][::-1], color="#37a")
        ax.set_xlabel("SQNR (dB), higher is better")
        ax.set_title(f"int8 ({report.get('layers_taps') or 'emulator'} taps) vs FP32 activations, per PyTorch module")
        out["sqnr"] = _png(fig)
    cm = report.get("confusion_matrix")
    if cm:
        n = len(cm["labels"])
        fig, ax = plt.subplots(figsize=(0.45 * n + 2, 0.45 * n + 1.5))
        ax.imshow(cm["matrix"], cmap="Blues")
        ax.set_xticks(range(n), cm["labels"], rotation=90)
        ax.set_yticks(range(n), cm["labels"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for i, row in enumerate(cm["matrix"]):
            for j, v in enumerate(row):
                if v:
                    ax.text(j, i, str(v), ha="center", va="center", fontsize=7)
        out["confusion"] = _png(fig)
    return out


def html_report(report: dict[str, Any], md: str) -> str:
    """Self-contained HTML: the Markdown content as preformatted tables plus the embedded plots."""
    images = plots(report)
    gate = report["gate"]
    colour = "#2a2" if gate["passed"] else "#c22"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>tinyprec validation: {html.escape(report['model']['name'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}"
        "pre{white-space:pre-wrap}</style></head><body>",
        f"<h1>Validation report: {html.escape(report['model']['name'])}</h1>",
        f"<p style='font-size:1.3em;color:{colour}'><b>Gate {'PASSED' if gate['passed'] else 'FAILED'}</b></p><ul>",
    ]
    parts += [f"<li>{'ok' if c['passed'] else '<b>FAIL</b>'}: {html.escape(c['message'])}</li>" for c in gate["checks"]]
    parts.append("</ul>")
    titles = {"accuracy": "Accuracy per runner", "sqnr": "Per-layer SQNR", "confusion": "Confusion matrix"}
    for key, title in titles.items():
        if key in images:
            parts.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{images[key]}'>")
    parts.append("<h2>Details</h2>")
    parts.append(_md_tables_to_html(md))
    parts.append("</body></html>")
    return "\n".join(parts)


def _md_tables_to_html(md: str) -> str:
    out: list[str] = []
    in_table = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip().strip("`*")) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                out.append("<table>")
                in_table = True
                out.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                out.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 4)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line.strip('- *'))}</p>")
    if in_table:
        out.append("</table>")
    return "\n".join(out)


def write_reports(report: dict[str, Any], report_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html atomically; returns role -> path."""
    report = _clean(report)
    report_dir = Path(report_dir)
    md = markdown(report)
    paths = {
        "report_json": atomic_write_text(report_dir / "report.json", json.dumps(report, indent=2) + "\n"),
        "report_md": atomic_write_text(report_dir / "report.md", md),
        "report_html": atomic_write_text(report_dir / "report.html", html_report(report, md)),
    }
    return paths
