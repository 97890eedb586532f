"""The summary that benchmarks/gpu_check.sh prints last, and the model rows' backend it picks.

`summary` reads the step table the script writes (name, status, exit code, seconds, limit, log,
bench JSON per line) and each bench step's JSON (rewritten after every row, so a cut or crashed
process still has its finished rows): per step its status and a note; the machine's versions;
per bench process its rows, and the last lines of its log when it crashed or failed; the
autotuner's winning configs (TRITON_PRINT_AUTOTUNING lines in the bench logs); what did not run.
Exit status: 0 when every step passed and every planned row ran, 3 otherwise. With --fault
STEP=BACKEND (gpu_check.sh --dry-run --fault), 0 when STEP crashed by the injected fault and
everything else passed.
`model-backend` prints the fastest of the given fused backends whose op rows all ran (least
fwd+bwd time summed over the levels of the first dtype), else "reference", a tab, and why.
Standard library only, so it runs even when torch or poster_fast cannot be imported.

    python benchmarks/gpu_check_summary.py summary [--mode M] [--budget S] [--elapsed S]
        [--fault STEP=BACKEND] STEPS_TSV
    python benchmarks/gpu_check_summary.py model-backend --among triton,cuda BENCH_JSON...
"""
from __future__ import annotations

import argparse
import ast
import json
import math
import re
import signal
import sys
from pathlib import Path
from typing import Any

PYTEST_LINE = re.compile(r"\d+ (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b"
                         r"|no tests ran|\d+ tests? collected")
NOT_RUN = ("pending", "running", "cut")  # pending/running: the process ended before marking them
AUTOTUNE = re.compile(r"Triton autotuning for function (\w+),\s*with key as (.*?),\s*finished after ([\d.]+)s,"
                      r"\s*best config selected: (.*?);", re.S)
FAULT_LINE = "gpu_check_fault: backend {!r} aborts its process (injected fault)"
STEP_KEYS = ("name", "status", "rc", "seconds", "limit", "log", "json")
Row = dict[str, Any]


def read_steps(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        if line.strip():
            cells = line.split("\t")
            steps.append(dict(zip(STEP_KEYS, cells + ["-"] * (len(STEP_KEYS) - len(cells)))))
    return steps


def log_lines(step: dict[str, str]) -> list[str]:
    """The step's log without the command line the script writes first."""
    log = Path(step.get("log", "-"))
    if step.get("log", "-") == "-" or not log.is_file():
        return []
    lines = [ln.rstrip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    return lines[1:] if lines and lines[0].startswith("$ ") else lines


def signal_name(rc: str) -> str:
    try:
        return signal.Signals(int(rc) - 128).name
    except ValueError:
        return f"signal {int(rc) - 128}"


def step_note(step: dict[str, str]) -> str:
    """One line from the step's log: the versions, the pytest tally, the signal, or the last error."""
    if step["status"] == "absent":
        return "not in this tree"
    lines = log_lines(step)
    if step["name"] == "machine":
        found = [ln for ln in lines if ln.startswith("machine:")]
        note = found[-1] if found else (lines[-1] if lines else "")
    elif step["name"] in ("tests", "all-configs"):
        found = [ln.strip("= ") for ln in lines if PYTEST_LINE.search(ln)]
        note = found[-1] if found else (lines[-1] if lines else "")
    elif step["status"] == "crashed":
        note = f"killed by {signal_name(step['rc'])}"
    elif step["status"] == "ok":
        note = ""
    else:
        errors = [ln for ln in lines if "error" in ln.lower()]
        note = errors[-1] if errors else (lines[-1] if lines else "")
    return note[:110]


def fmt(row: Row, key: str, spec: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if spec == "sig":  # 3 significant digits, at most 3 decimals, no exponent
        return f"{value:.{min(3, max(0, 2 - math.floor(math.log10(abs(value)))))}f}" if value else "0"
    return format(value, spec)


def shown_status(row: Row, crashed: bool) -> str:
    """A row's status as the summary shows it: where a process crashed, the row it was running."""
    if crashed and row["status"] == "running":
        return "crashed"
    return "not run" if row["status"] == "pending" else row["status"]


def op_lines(rows: list[Row], crashed: bool) -> list[str]:
    head = (f"  {'L':>1} {'dtype':5} {'backend':10} {'status':7} {'fwd ms':>8} {'x':>6} {'TF/s':>6} {'%pk':>5}"
            f" {'GB/s':>6} {'%bw':>5} | {'f+b ms':>8} {'x':>6} {'TF/s':>6} {'%pk':>5} {'GB/s':>6} {'%bw':>5}"
            f" | {'err':>7}")
    out = [head]
    skipped: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r["status"] == "skipped":
            skipped.setdefault((r["backend"], r["reason"]), []).append(f"{r['level']}/{r['dtype']}")
            continue
        cells = [f"  {r['level']:>1} {r['dtype']:5} {r['backend']:10} {shown_status(r, crashed):7}"]
        for p in ("fwd", "fwdbwd"):
            cells.append(f"{fmt(r, p + '_ms', '.3f'):>8} {fmt(r, p + '_speedup', '.2f'):>6}"
                         f" {fmt(r, p + '_tflops', 'sig'):>6} {fmt(r, p + '_flops_pct', '.1f'):>5}"
                         f" {fmt(r, p + '_gb_s', 'sig'):>6} {fmt(r, p + '_bw_pct', '.1f'):>5}")
        line = " ".join(cells[:2]) + " | " + cells[2] + f" | {fmt(r, 'max_rel_err', '.1e'):>7}"
        out.append(line + (f"  {r['reason'][:70]}" if r["reason"] else ""))
    for (backend, why), where in skipped.items():
        out.append(f"  skipped {backend} ({', '.join(where)}): {why[:90]}")
    return out


def model_lines(rows: list[Row], crashed: bool) -> list[str]:
    out = []
    for r in rows:
        out.append(f"  {r['dtype']:5} {r['backend']:16} {shown_status(r, crashed):7}"
                   f" infer {fmt(r, 'infer_img_s', 'sig'):>6} img/s x{fmt(r, 'infer_speedup', '.2f')}"
                   f"  train {fmt(r, 'train_ms', '.1f'):>7} ms x{fmt(r, 'train_speedup', '.2f')}"
                   f"  b1 {fmt(r, 'latency_b1_ms', '.2f'):>6} ms x{fmt(r, 'latency_b1_speedup', '.2f')}"
                   + (f"  {r['reason'][:60]}" if r["reason"] else ""))
    return out


def read_bench(path: str) -> tuple[dict[str, Any] | None, str]:
    """(the bench JSON, '') or (None, why it cannot be read)."""
    if path == "-" or not Path(path).is_file():
        return None, f"no JSON at {path} (the process wrote none)"
    try:
        return json.loads(Path(path).read_text()), ""
    except (OSError, ValueError) as exc:
        return None, f"unreadable JSON {path}: {exc}"


def bench_section(step: dict[str, str]) -> tuple[list[str], list[str]]:
    """(lines to print, what did not run) for one bench step."""
    name, crashed = step["name"], step["status"] == "crashed"
    result, why = read_bench(step["json"])
    state = step["status"] + (f" ({signal_name(step['rc'])})" if crashed else "")
    if result is None:
        return [f"bench {name} ({state}): {why}"], [f"{name}: no rows"]
    m = result.get("meta", {})
    card = m.get("card")
    done = "complete" if result.get("complete") else f"not complete (cut: {result.get('cut') or 'the process ended'})"
    what = (f"--backends {','.join(m.get('backends') or [])}" if "ops" in m.get("sections", [])
            else f"--model-backend {m.get('model_backend')}")
    lines = [f"bench {name} ({state}; {done}): {what}, {m.get('device_name')} ({'card ' + card['name'] if card else 'no peak table entry: no %'}),"
             f" torch {m.get('torch')}, triton {m.get('triton')}, op batch {m.get('batch')},"
             f" model batch {m.get('model_batch')}"]
    ops = result.get("ops") or []
    if ops:
        lines += op_lines(ops, crashed)
    model = result.get("model") or {}
    rows = model.get("rows") or []
    if model:
        lines.append(f"  model rows (fast backend {model.get('fast_backend')}: {model.get('fast_backend_rule')};"
                     " x: reference-attention time / time):")
        lines += model_lines(rows, crashed)
    elif any(s in m.get("sections", []) for s in ("infer", "train", "latency")):
        lines.append("  model rows: not reached")
    if step["status"] in ("crashed", "failed"):
        lines.append(f"  last lines of {step['log']}:")
        lines += [f"   | {ln[:150]}" for ln in log_lines(step)[-8:]]
    missing = []
    cut_ops = [r for r in ops if r["status"] in NOT_RUN]
    if cut_ops:
        missing.append(f"{name}: {len(cut_ops)} op rows (" + ", ".join(
            f"{r['dtype']} L{r['level']} {r['backend']}" for r in cut_ops[:8]) + (", ..." if len(cut_ops) > 8 else "") + ")")
    cut_model = [r for r in rows if r["status"] in NOT_RUN]
    if cut_model:
        missing.append(f"{name}: {len(cut_model)} model rows")
    if not model and any(s in m.get("sections", []) for s in ("infer", "train", "latency")):
        missing.append(f"{name}: the model section")
    errors = [r for r in ops + rows if r["status"] == "error"]
    if errors:
        missing.append(f"{name}: {len(errors)} rows failed")
    return lines, missing


def autotune_lines(steps: list[dict[str, str]]) -> list[str]:
    """The autotuner's winners printed in the bench logs: kernel, key, config, tuning time."""
    out = []
    for step in steps:
        if step["json"] == "-":
            continue
        for kernel, key, secs, config in AUTOTUNE.findall("\n".join(log_lines(step))):
            try:
                values = ast.literal_eval(key)
            except (ValueError, SyntaxError):
                values = (key,)
            dtypes = [v.removeprefix("torch.") for v in values if isinstance(v, str) and v.startswith("torch.")]
            shown = ", ".join(str(v) for v in values if not (isinstance(v, str) and v.startswith("torch.")))
            config = ", ".join(c for c in config.split(", ") if not c.startswith(("num_ctas", "maxnreg")))
            out.append(f"  {step['name']:8} {kernel:16} ({shown}) {dtypes[0] if dtypes else ''}: {config}"
                       f" ({float(secs):.1f} s)")
    return out


def summary(args: argparse.Namespace) -> int:
    steps = read_steps(args.steps)
    print(f"GPU check summary ({args.mode}; budget {args.budget} s, {args.elapsed} s used); "
          f"logs in {args.steps.parent}")
    print(f"  {'step':12} {'status':7} {'exit':>4} {'s':>4} {'limit':>5}  note")
    for s in steps:
        print(f"  {s['name']:12} {s['status']:7} {s['rc']:>4} {s['seconds']:>4} {s['limit']:>5}  {step_note(s)}")
    machine = next((s for s in steps if s["name"] == "machine"), None)
    if machine and machine["status"] != "cut":
        print("machine:")
        print("\n".join(f"  {ln[:150]}" for ln in log_lines(machine)))
    missing_of: dict[str, list[str]] = {}
    for step in steps:
        if step["json"] != "-":
            lines, missing_of[step["name"]] = bench_section(step)
            print("\n".join(lines))
    winners = autotune_lines(steps)
    print("autotune winners (TRITON_PRINT_AUTOTUNING, bench logs):" if winners else
          "autotune winners: none printed" + (" (the interpreter runs one config per kernel)"
                                              if args.mode == "dry-run" else ""))
    if winners:
        print("\n".join(winners))
    fault_step, _, fault_backend = (args.fault or "").partition("=")
    problems = []
    for s in steps:
        if s["name"] == fault_step:
            continue
        if s["status"] not in ("ok", "absent"):
            problems.append(f"{s['name']} {s['status']}")
        problems += missing_of.get(s["name"], [])
    if fault_step:
        step = next((s for s in steps if s["name"] == fault_step), None)
        planted = step is not None and FAULT_LINE.format(fault_backend) in log_lines(step)
        if step is None or step["status"] != "crashed" or not planted:
            problems.insert(0, f"the injected fault did not crash {fault_step} "
                               f"({'not run' if step is None else step['status']})")
        elif not problems:
            print(f"RESULT: fault rehearsal passed: {fault_step} crashed where {fault_backend} ran, as injected, "
                  "and was contained; every other step passed and every other row ran")
            return 0
    print("RESULT: " + ("every step passed and every planned row ran" if not problems
                        else "not all ran: " + "; ".join(problems)))
    return 3 if problems else 0


def model_backend(paths: list[str], among: list[str]) -> tuple[str, str]:
    """(backend, why): the fastest of `among` whose op rows all ran, else the reference."""
    rows = []
    for path in paths:
        result, _ = read_bench(path)
        rows += (result or {}).get("ops") or []
    totals = {}
    for name in among:
        own = [r for r in rows if r["backend"] == name]
        first = [r for r in own if r["dtype"] == own[0]["dtype"]] if own else []
        if first and all(r["status"] == "ok" and "fwdbwd_ms" in r for r in first):
            totals[name] = sum(r["fwdbwd_ms"] for r in first)
    if not totals:
        return "reference", f"none of {', '.join(among)} timed every op row"
    best = min(totals, key=totals.get)
    return best, f"least op fwd+bwd time of {', '.join(f'{n} {t:.3f} ms' for n, t in totals.items())}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("summary", help="print the summary")
    s.add_argument("--mode", default="gpu")
    s.add_argument("--budget", type=int)
    s.add_argument("--elapsed", type=int)
    s.add_argument("--fault", metavar="STEP=BACKEND", help="the step whose backend was made to crash")
    s.add_argument("steps", type=Path)
    m = sub.add_parser("model-backend", help="print the model rows' backend")
    m.add_argument("--among", required=True, help="comma-separated fused backends")
    m.add_argument("json", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "summary":
        return summary(args)
    print("\t".join(model_backend(args.json, [n for n in args.among.split(",") if n])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
