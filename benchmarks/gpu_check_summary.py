"""The summary that benchmarks/gpu_check.sh prints last: what ran, what failed, what was cut.

Reads the step table the script writes (name, status, exit code, seconds, limit, log per line)
and the bench JSON (rewritten after every row, so a cut run still has its finished rows).
Standard library only, so it prints even when torch or poster_fast cannot be imported.
Exit status: 0 when every step passed and every planned row ran, 3 otherwise.

    python benchmarks/gpu_check_summary.py [--mode M] [--budget S] [--elapsed S] STEPS_TSV BENCH_JSON
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

PYTEST_LINE = re.compile(r"\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b"
                         r"|no tests ran|\d+ tests? collected")
NOT_RUN = ("pending", "running", "cut")  # pending/running: the run was killed before marking them


def read_steps(path: Path) -> list[dict[str, str]]:
    keys = ("name", "status", "rc", "seconds", "limit", "log")
    if not path.is_file():
        return []
    return [dict(zip(keys, line.split("\t"))) for line in path.read_text().splitlines() if line.strip()]


def step_note(step: dict[str, str]) -> str:
    """One line from the step's log: the versions, the pytest tally, or the last error."""
    if step["status"] == "absent":
        return "tests/test_triton_kernels.py is not in this tree"
    log = Path(step.get("log", ""))
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] \
        if log.is_file() else []
    if step["name"] == "machine":
        found = [ln for ln in lines if ln.startswith("machine:")]
        note = found[-1] if found else (lines[-1] if lines else "")
    elif step["name"] in ("tests", "all-configs"):
        found = [ln.strip("= ") for ln in lines if PYTEST_LINE.search(ln)]
        note = found[-1] if found else (lines[-1] if lines else "")
    elif step["status"] == "ok":
        note = ""
    else:
        errors = [ln for ln in lines if "error" in ln.lower()]
        note = errors[-1] if errors else (lines[-1] if lines else "")
    return note[:110]


def fmt(row: dict[str, Any], key: str, spec: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if spec == "sig":  # 3 significant digits, at most 3 decimals, no exponent
        return f"{value:.{min(3, max(0, 2 - math.floor(math.log10(abs(value)))))}f}" if value else "0"
    return format(value, spec)


def op_lines(rows: list[dict[str, Any]]) -> list[str]:
    head = (f"  {'L':>1} {'dtype':5} {'backend':10} {'status':7} {'fwd ms':>8} {'x':>6} {'TF/s':>6} {'%pk':>5}"
            f" {'GB/s':>6} {'%bw':>5} | {'f+b ms':>8} {'x':>6} {'TF/s':>6} {'%pk':>5} {'GB/s':>6} {'%bw':>5}"
            f" | {'err':>7}")
    out = [head]
    skipped: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["status"] == "skipped":
            skipped.setdefault((r["backend"], r["reason"]), []).append(f"{r['level']}/{r['dtype']}")
            continue
        cells = [f"  {r['level']:>1} {r['dtype']:5} {r['backend']:10} {r['status']:7}"]
        for p in ("fwd", "fwdbwd"):
            cells.append(f"{fmt(r, p + '_ms', '.3f'):>8} {fmt(r, p + '_speedup', '.2f'):>6}"
                         f" {fmt(r, p + '_tflops', 'sig'):>6} {fmt(r, p + '_flops_pct', '.1f'):>5}"
                         f" {fmt(r, p + '_gb_s', 'sig'):>6} {fmt(r, p + '_bw_pct', '.1f'):>5}")
        line = " ".join(cells[:2]) + " | " + cells[2] + f" | {fmt(r, 'max_rel_err', '.1e'):>7}"
        out.append(line + (f"  {r['reason'][:70]}" if r["reason"] else ""))
    for (backend, why), where in skipped.items():
        out.append(f"  skipped {backend} ({', '.join(where)}): {why[:90]}")
    return out


def model_lines(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in rows:
        out.append(f"  {r['dtype']:5} {r['backend']:16} {r['status']:7} infer {fmt(r, 'infer_img_s', 'sig'):>6} img/s"
                   f" x{fmt(r, 'infer_speedup', '.2f')}  train {fmt(r, 'train_ms', '.1f'):>7} ms"
                   f" x{fmt(r, 'train_speedup', '.2f')}  b1 {fmt(r, 'latency_b1_ms', '.2f'):>6} ms"
                   f" x{fmt(r, 'latency_b1_speedup', '.2f')}" + (f"  {r['reason'][:60]}" if r["reason"] else ""))
    return out


def bench_section(path: Path) -> tuple[list[str], list[str]]:
    """(lines to print, what did not run) for the bench JSON."""
    if not path.is_file():
        return [f"bench: no JSON at {path} (the bench did not start)"], ["bench: no rows"]
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return [f"bench: unreadable JSON {path}: {exc}"], ["bench: unreadable JSON"]
    m = result.get("meta", {})
    card = m.get("card")
    state = "complete" if result.get("complete") else f"NOT complete (cut: {result.get('cut') or 'killed'})"
    lines = [f"bench: {m.get('device_name')} ({'card ' + card['name'] if card else 'no peak table entry: no %'}),"
             f" torch {m.get('torch')}, triton {m.get('triton')}, op batch {m.get('batch')},"
             f" model batch {m.get('model_batch')}; {state}",
             "op rows (x: reference time / time, same run; TF/s, GB/s: achieved on the op's FLOPs and"
             " minimum bytes; %pk, %bw: of the card's dense peak for the dtype and of its HBM bandwidth):"]
    ops = result.get("ops") or []
    lines += op_lines(ops)
    model = result.get("model") or {}
    rows = model.get("rows") or []
    if model:
        lines.append(f"model rows (fast backend {model.get('fast_backend')}: {model.get('fast_backend_rule')};"
                     " x: reference-attention time / time):")
        lines += model_lines(rows)
    elif any(s in m.get("sections", []) for s in ("infer", "train", "latency")):
        lines.append("model rows: not reached")
    missing = []
    cut_ops = [r for r in ops if r["status"] in NOT_RUN]
    if cut_ops:
        missing.append(f"{len(cut_ops)} op rows (" + ", ".join(
            f"{r['dtype']} L{r['level']} {r['backend']}" for r in cut_ops[:8]) + (", ..." if len(cut_ops) > 8 else "") + ")")
    cut_model = [r for r in rows if r["status"] in NOT_RUN]
    if cut_model:
        missing.append(f"{len(cut_model)} model rows")
    if not model and any(s in m.get("sections", []) for s in ("infer", "train", "latency")):
        missing.append("the model section")
    errors = [r for r in ops + rows if r["status"] == "error"]
    if errors:
        missing.append(f"{len(errors)} rows failed")
    return lines, missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", default="gpu")
    parser.add_argument("--budget", type=int)
    parser.add_argument("--elapsed", type=int)
    parser.add_argument("steps", type=Path)
    parser.add_argument("json", type=Path)
    args = parser.parse_args(argv)

    steps = read_steps(args.steps)
    print(f"GPU check summary ({args.mode}; budget {args.budget} s, {args.elapsed} s used); "
          f"logs in {args.steps.parent}")
    print(f"  {'step':12} {'status':7} {'exit':>4} {'s':>4} {'limit':>5}  note")
    for s in steps:
        print(f"  {s['name']:12} {s['status']:7} {s['rc']:>4} {s['seconds']:>4} {s['limit']:>5}  {step_note(s)}")
    lines, missing = bench_section(args.json)
    print("\n".join(lines))
    bad_steps = [f"{s['name']} {s['status']}" for s in steps if s["status"] not in ("ok", "absent")]
    problems = bad_steps + missing
    print("RESULT: " + ("every step passed and every planned row ran" if not problems
                        else "not all ran: " + "; ".join(problems)))
    return 3 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
