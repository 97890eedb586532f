"""The bench's printed tables (standard library only; runner.py writes its JSON)."""
from __future__ import annotations

import math
from typing import Any

from .config import LEVELS

Row = dict[str, Any]


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain-text table: first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def cell(row: Row, key: str, fmt: str) -> str:
    """`row[key]` formatted ("sig": 3 significant digits, at most 3 decimals, no exponent), "-" when
    absent or None."""
    value = row.get(key)
    if value is None:
        return "-"
    if fmt == "sig":
        return f"{value:.{min(3, max(0, 2 - math.floor(math.log10(abs(value)))))}f}" if value else "0"
    return format(value, fmt)


def _notes(rows: list[Row], where: Any) -> list[str]:
    """One line per (backend, status, reason) that is not a plain "ok", with where it occurred."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for r in rows:
        if r["status"] != "ok" or r["reason"]:
            groups.setdefault((r["backend"], r["status"], r["reason"]), []).append(where(r))
    return [f"  {b} {status} ({', '.join(at)}): {why}" for (b, status, why), at in groups.items()]


def card_line(card: dict[str, Any] | None) -> str:
    if card is None:
        return "card not in the peak table (or a CPU): no % of peak"
    return (f"% of {card['name']} dense peaks: TF32 {card['tf32_tflops']:g} (fp32 rows), "
            f"BF16 {card['bf16_tflops']:g}, FP16 {card['fp16_tflops']:g} TFLOP/s; "
            f"HBM {card['hbm_gb_s']:g} GB/s")


def format_ops(rows: list[Row], card: dict[str, Any] | None, title: str = "W-MCSA op") -> str:
    headers = ["level", "dtype", "backend"]
    for p in ("fwd", "fwd+bwd"):
        headers += [f"{p} ms", "x eager", "TFLOP/s", "%pk", "GB/s", "%bw"]
    headers.append("max rel err")
    body = []
    for r in rows:
        cells = [f"{r['level']} (W{r['window']} N{r['tokens']} H{r['heads']})", r["dtype"], r["backend"]]
        for p in ("fwd", "fwdbwd"):
            cells += [cell(r, f"{p}_ms", ".3f"), cell(r, f"{p}_speedup", ".2f"), cell(r, f"{p}_tflops", "sig"),
                      cell(r, f"{p}_flops_pct", ".1f"), cell(r, f"{p}_gb_s", "sig"), cell(r, f"{p}_bw_pct", ".1f")]
        body.append(cells + [cell(r, "max_rel_err", ".1e")])
    b = rows[0]["batch"] if rows else 0
    head_dims = "/".join(sorted({str(level.head_dim) for level in LEVELS.values()}))
    head = (f"{title}, batch {b}, D={head_dims}, nW=1: median ms; x eager = reference time / time (same run); "
            "TFLOP/s: fwd = 4BHN^2D, fwd+bwd = 3.5 x fwd; GB/s: minimum bytes moved; error vs float64\n"
            + card_line(card))
    notes = _notes(rows, lambda r: f"{r['level']}/{r['dtype']}")
    return "\n".join([head, table(headers, body)] + (["not timed, or not fully:"] + notes if notes else []))


def format_model(rows: list[Row], notes: list[str], fast_why: str) -> str:
    headers = ["dtype", "backend", "batch", "infer ms", "img/s", "x ref", "x fp32", "train ms", "x ref",
               "x fp32", "peak GiB", "b1 ms", "x ref", "x fp32"]
    body = [[r["dtype"], r["backend"], str(r["batch"]), cell(r, "infer_ms", ".1f"), cell(r, "infer_img_s", ".1f"),
             cell(r, "infer_speedup", ".2f"), cell(r, "infer_vs_fp32", ".2f"), cell(r, "train_ms", ".1f"),
             cell(r, "train_speedup", ".2f"), cell(r, "train_vs_fp32", ".2f"), cell(r, "train_peak_gib", ".2f"),
             cell(r, "latency_b1_ms", ".2f"), cell(r, "latency_b1_speedup", ".2f"),
             cell(r, "latency_b1_vs_fp32", ".2f")]
            for r in rows]
    head = ("POSTER V2 model, random weights: eval inference (no_grad), training step "
            "(zero_grad + fwd + CE + bwd + Adam), batch-1 latency; median ms; "
            "x ref = the dtype's reference-attention time / time, x fp32 = the plain fp32 model's time / "
            "time (same run); optimize(...) inference rows hold their weights in the dtype (predict's "
            f"model), its training rows use autocast; fast backend: {fast_why}")
    status = _notes(rows, lambda r: r["dtype"])
    return "\n".join([head, table(headers, body)] + (["not timed, or not fully:"] + status if status else [])
                     + [f"note: {n}" for n in notes])


def _dtype_notes(rows: list[Row]) -> list[str]:
    """One line per row of a per-dtype section that is not a plain "ok"."""
    return [f"  {r['dtype']} {r['status']}: {r['reason']}" for r in rows if r["status"] != "ok" or r["reason"]]


def format_roofline(section: dict[str, Any]) -> str:
    headers = ["dtype", "conv GFLOP/s", "path", "matmul GFLOP/s", "linear", "model GFLOP/s", "fraction",
               "ms/img", "b1 ms"]
    body = [[r["dtype"], cell(r, "conv_gflop_s", ".0f"), r.get("conv_path", "-"), cell(r, "matmul_gflop_s", ".0f"),
             r.get("linear_path", "-"), cell(r, "model_gflop_s", ".0f"), cell(r, "fraction", ".2f"),
             cell(r, "model_ms_per_image", ".1f"), cell(r, "latency_b1_ms", ".1f")] for r in section["rows"]]
    cases = ", ".join(f"{c}ch {s}x{s}" for c, s in section["conv_cases"])
    batch = section["rows"][0]["batch"] if section["rows"] else 0
    head = (f"Roofline, measured in this run ({section['clock']} clock, medians of {section['rounds']} interleaved "
            f"rounds): 3x3 convolutions ({cases}; channels-last, batch {section['conv_batch']}; the faster "
            f"path), a {section['matmul_size']}^3 matmul; predict's model at batch {batch}: "
            f"{section['flops_per_image'] / 1e9:.2f} GFLOP per image (FlopCounterMode); "
            "fraction = model GFLOP/s / conv GFLOP/s")
    notes = _dtype_notes(section["rows"])
    if not section["rows"]:
        notes = ["  none of the dtypes asked for is computed natively here"]
    layers = [f"  {r['dtype']}: {r['layers']}" for r in section["rows"] if r.get("layers")]
    return "\n".join([head, table(headers, body)] + (["model layers:"] + layers if layers else [])
                      + (["not measured, or not fully:"] + notes if notes else []))


def format_profile(section: dict[str, Any]) -> str:
    parts = []
    for r in [r for r in section["rows"] if r.get("classes")]:
        classes = r["classes"]
        body = [[c["op_class"], cell(c, "ms", ".1f"), f"{100 * c['share']:.1f}%", cell(c, "gflop", ".2f"),
                 cell(c, "gflop_s", ".0f"), str(c["calls"])] for c in classes]
        parts.append(f"Profile of predict's model, {r['dtype']}, batch {r['batch']} ({section['clock']} clock, "
                     f"medians of {section['rounds']} forwards; each op timed as it runs)\n"
                     + table(["op class", "ms", "share", "GFLOP", "GFLOP/s", "calls"], body))
    notes = _dtype_notes(section["rows"])
    return "\n\n".join(parts + (["not measured, or not fully:\n" + "\n".join(notes)] if notes else []))
