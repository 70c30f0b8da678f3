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
        lines += _layer_lines(report)
    if report.get("search"):
        lines += _search_lines(report)
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
    lines.append(f"- board: {res['board']['summary']} (gate resources: {res.get('gate_source', 'estimated')})")
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


def _layer_lines(report: dict[str, Any]) -> list[str]:
    own = report.get("layers_reference") or "stage-1 FP32 weights"
    stage1 = any(r.get("sqnr_stage1_db") is not None for r in report["layers"]) and own == "QAT float weights"
    lines = ["", f"## Per-layer error ({report.get('layers_taps', 'emulator')} taps vs float activations)", "",
             "Each quantized op output, dequantized, against the float activation of the PyTorch module it came "
             "from (after its folded BatchNorm and fused activation), in NHWC; LSB = that tensor's scale. "
             f"Reference: the same network's own float weights ({own}), so the error is quantization alone."
             + (" The stage-1 column compares with the FP32 model before QAT: it adds the fine-tuning's "
                "weight drift to the quantization error." if stage1 else ""), ""]
    head = "| # | op | module | precision | shape | SQNR (dB) |" + (" SQNR vs stage-1 FP32 (dB) |" if stage1 else "")
    head += " max err (LSB) | mean err (LSB) |"
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for row in report["layers"]:
        extra = f" {_fmt(row.get('sqnr_stage1_db'))} |" if stage1 else ""
        lines.append(f"| {row['index']} | {row['op']} | `{row['module']}` | {row.get('precision') or '-'} | "
                     f"{'x'.join(map(str, row['shape']))} | {_fmt(row['sqnr_db'])} |{extra} "
                     f"{_fmt(row['max_err_lsb'])} | {_fmt(row['mean_err_lsb'], 3)} |")
    return lines


def _search_lines(report: dict[str, Any]) -> list[str]:
    s = report["search"]
    lines = ["", "## Precision search (per-layer INT4 weights / int16 activations)", "",
             f"Each candidate is the least-flash assignment under a bound on the summed per-layer output KL "
             f"(sensitivity vs the model's own float weights) within the RAM budget "
             f"({s['arena_budget']:,} B of TFLM arena; the all-int8 model measured {s['int8_arena_bytes']:,} B, "
             f"{s['int8_file_bytes']:,} B file), PTQ-quantized and scored on the validation split "
             f"(FP32 {s['fp32_val_accuracy']:.2f}{_int8_val(s)}). Chosen: the least flash whose cost (validation "
             f"accuracy below the all-int8 PTQ model's) is within {s['max_drop']:.2f} points; QAT then ran once on "
             f"it. Flash and arena are the budget model's estimates ({s.get('arena_kernels', 'reference')} kernels; "
             f"the choice's arena measured on {s.get('arena_measured_on', 'host TFLM')}); the exported model's "
             f"measured figures are under MCU resources. "
             f"Search time {s['seconds']:.1f} s.", ""]
    layers = list(s["candidates"][0]["assignment"]) if s["candidates"] else []
    head = ("| # | " + " | ".join(f"`{n}`" for n in layers)
            + " | est. file (B) | est. arena (B) | INT4 scratch (B) | val acc | drop vs FP32 | cost vs int8 | |")
    lines += [head, "|---" * (head.count("|") - 1) + "|"]
    for i, c in enumerate(s["candidates"]):
        mark = "**chosen**" if i == s["chosen"] else ("" if c["fits"] else "over RAM budget")
        lines.append(f"| {i} | " + " | ".join(c["assignment"][n] for n in layers) +
                     f" | {c['flash_bytes']:,} | {c['arena_bytes']:,} | {c['int4_scratch_bytes']:,} | "
                     f"{_fmt(c['val_accuracy'])} | {_fmt(c['val_drop'])} | {_fmt(c.get('val_cost'))} | {mark} |")
    for note in s.get("notes") or []:
        lines.append(f"- {note}")
    return lines


def _int8_val(s: dict[str, Any]) -> str:
    v = s.get("int8_val_accuracy")
    return "" if v is None else f", all-int8 PTQ {v:.2f}"


def _tradeoff_plot(report: dict[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    s, res = report["search"], report["resources"]
    cands = s["candidates"]
    fig, ax = plt.subplots(figsize=(7, 3.6))
    xs = [c["flash_bytes"] / 1024 for c in cands]
    ys = [c["val_accuracy"] for c in cands]
    sc = ax.scatter(xs, ys, c=[c["arena_bytes"] / 1024 for c in cands], cmap="viridis", s=45, zorder=3)
    fig.colorbar(sc, ax=ax, label="est. arena (KiB)")
    ch = cands[s["chosen"]]
    ax.scatter([ch["flash_bytes"] / 1024], [ch["val_accuracy"]], s=180, facecolors="none", edgecolors="#c22",
               zorder=4, label="chosen (PTQ, validation split)")
    tflm = report["accuracy"].get("tflm")
    if tflm is not None:
        ax.scatter([res["model_bytes"] / 1024], [tflm], marker="*", s=160, color="#c22", zorder=5,
                   label=f"exported after QAT: TFLM, test split, arena {res['arena_bytes']:,} B")
    floor = (s.get("int8_val_accuracy") or s["fp32_val_accuracy"]) - s["max_drop"]
    ax.axhline(floor, color="#999", ls="--", lw=1, label="all-int8 PTQ val - max_drop")
    ax.set_xlabel("model file (KiB)")
    ax.set_ylabel(report["metric"])
    ax.set_title(f"flash / RAM / accuracy trade-off (RAM budget {s['arena_budget']:,} B arena)")
    ax.legend(fontsize=7, loc="lower right")
    return fig


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
        # Horizontal bars: runner names sit on the y axis, one per row, so long names never overlap.
        names, values = list(acc)[::-1], list(acc.values())[::-1]
        fig, ax = plt.subplots(figsize=(7, 0.38 * len(acc) + 1.1))
        ax.barh(names, values, color=["#777" if k == "fp32" else "#3a7" for k in names])
        lo, hi = min(values), max(values)
        ax.set_xlim(max(0.0, lo - 5.0), hi + 0.12 * (hi - max(0.0, lo - 5.0)) + 0.5)
        for i, v in enumerate(values):
            ax.text(v, i, f" {v:.2f}", ha="left", va="center", fontsize=8)
        ax.set_xlabel(report["metric"])
        ax.set_title(f"{report['metric']} per runner ({report['data']['samples']} held-out samples)")
        out["accuracy"] = _png(fig)
    layers = [r for r in report.get("layers") or [] if r["sqnr_db"] is not None]
    if layers:
        import numpy as np

        fig, ax = plt.subplots(figsize=(7, 0.45 * len(layers) + 1.2))
        labels = [f"{r['module']} ({r['op']}{', ' + r['precision'] if r.get('precision') else ''})" for r in layers][::-1]
        y = np.arange(len(layers))
        stage1 = [r.get("sqnr_stage1_db") for r in layers][::-1]
        two = report.get("layers_reference") == "QAT float weights" and any(v is not None for v in stage1)
        h = 0.4 if two else 0.8
        ax.barh(y + (h / 2 if two else 0), [r["sqnr_db"] for r in layers][::-1], height=h, color="#37a",
                label="vs the network's own float weights (quantization error)")
        if two:
            ax.barh(y - h / 2, [np.nan if v is None else v for v in stage1], height=h, color="#bbb",
                    label="vs stage-1 FP32 (adds QAT weight drift)")
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / (len(layers) + 2)))
        ax.set_yticks(y, labels)
        ax.set_xlabel("SQNR (dB), higher is better")
        ax.set_title(f"per PyTorch module ({report.get('layers_taps') or 'emulator'} taps)")
        out["sqnr"] = _png(fig)
    if report.get("search") and report["search"].get("candidates"):
        out["tradeoff"] = _png(_tradeoff_plot(report))
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
    titles = {"accuracy": "Accuracy per runner", "sqnr": "Per-layer SQNR", "tradeoff": "Precision search: trade-off",
              "confusion": "Confusion matrix"}
    for key, title in titles.items():
        if key in images:
            parts.append(f"<h2>{title}</h2><img alt='{title}' src='data:image/png;base64,{images[key]}'>")
    parts.append("<h2>Details</h2>")
    parts.append(_md_tables_to_html(_details(md)))
    parts.append("</body></html>")
    return "\n".join(parts)


def _details(md: str) -> str:
    """The Markdown after its title and gate lines, which the HTML page already shows at the top."""
    lines = md.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Data:")), 0)
    return "\n".join(lines[start:])


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
