"""One bench run: the selected sections in a fixed order, the JSON rewritten after every row.

Order: budget; op rows of the fused backends (in ops.BACKENDS order), then the reference and
sdpa_mask baselines, per dtype and level; the model rows; FlexAttention's op rows last (its
compiles are slow). Rows are planned up front as "pending"; a row not started when the soft
time limit has passed is recorded as "cut", and an interrupt (SIGINT) marks the running row
and the rest "cut", prints the tables so far and stops: a cut run keeps every finished row.
"""
from __future__ import annotations

import platform
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch

from . import model, op
from ..device import choose_precision, hardware
from ..files import write_json
from .cards import card_for
from .config import MODEL_SECTIONS, SCHEMA, Config
from .report import format_model, format_ops
from .timing import Deadline, Progress

OP_FLOORS = {
    "flops": f"fwd = 4*B*nW*H*N*N*D, fwd+bwd = {op.FWDBWD_FACTOR} x fwd",
    "bytes": "fwd = E*(Q + 3*KV) + T*t, fwd+bwd = E*(3*Q + 9*KV) + 3*T*t + 8*L; E, T: element size of "
             "the inputs and of the table; Q = B*H*N*D, KV = B*nW*H*N*D, t = table entries, L = B*nW*H*N",
    "peak": "% of the card's dense tensor-core peak for the dtype (TF32 for fp32 inputs) and of its "
            "HBM bandwidth; null for unknown cards and CPUs",
}


def meta(cfg: Config, command: str, device_name: str, card: dict[str, Any] | None) -> dict[str, Any]:
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    cuda = cfg.device.type == "cuda"
    return {
        "date": datetime.now().isoformat(timespec="seconds"),
        "device": cfg.device.type, "device_name": device_name, "card": card,
        "cpu_threads": cfg.threads,
        "torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
        "command": command,
        "quick": cfg.quick, "batch": cfg.batch, "model_batch": cfg.model_batch, "dtypes": cfg.dtypes,
        "levels": cfg.levels, "backends": cfg.backends, "model_backend": cfg.model_backend,
        "sections": cfg.sections,
        "warmup": cfg.warmup, "iters": cfg.iters, "model_warmup": cfg.model_warmup,
        "model_iters": cfg.model_iters, "time_limit": cfg.time_limit,
        "timing": "median ms; CUDA events" if cuda else "median ms; perf_counter",
        "flops": OP_FLOORS["flops"], "bytes": OP_FLOORS["bytes"], "peak": OP_FLOORS["peak"],
        "error": "max |out - ref64| / max |ref64|",
    }


def run(cfg: Config, command: str = "poster-fast bench", json_path: Path | None = None,
        progress: Progress | None = None) -> dict[str, Any]:
    """Run the selected sections, print the tables, return (and optionally write) the results.
    `result["cut"]` says why rows were cut (None when every planned row ran)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _Run(cfg, command, json_path, progress or Progress()).run()
    finally:
        torch.set_num_threads(threads)


class _Run:
    def __init__(self, cfg: Config, command: str, json_path: Path | None, progress: Progress) -> None:
        cuda = cfg.device.type == "cuda"
        device_name = torch.cuda.get_device_name(cfg.device) if cuda else (platform.processor() or "cpu")
        card = card_for(device_name) if cuda else None
        self.cfg, self.card, self.json_path, self.progress = cfg, card, json_path, progress
        self.deadline = Deadline(cfg.time_limit)
        self._budget = None
        self.first, self.last = op.plan_rows(cfg) if "ops" in cfg.sections else ([], [])
        self.result: dict[str, Any] = {
            "schema": SCHEMA, "complete": False, "cut": None,
            "meta": meta(cfg, command, device_name, card.as_dict() if card else None),
            "budget": None, "ops": self.first + self.last, "model": None}
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)

    def save(self) -> None:
        op.link_speedups(self.result["ops"])
        if self.json_path:
            write_json(self.json_path, self.result)

    def run(self) -> dict[str, Any]:
        cfg, meta_ = self.cfg, self.result["meta"]
        if cfg.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        print(f"poster-fast bench: {meta_['device_name']} ({cfg.device.type}), torch {meta_['torch']}, "
              f"triton {meta_['triton']}", flush=True)
        self.save()
        # (name, what it measures, what it prints): printed right after it runs, or when cut.
        phases: list[tuple[str, Callable[[], None], Callable[[], str | None]]] = [
            ("budget", self.budget, self.budget_table),
            ("ops", lambda: self.ops(self.first), lambda: self.ops_table(self.first, "W-MCSA op")),
            ("model", self.model, self.model_table),
            ("ops, timed last", lambda: self.ops(self.last),
             lambda: self.ops_table(self.last, "W-MCSA op, timed last (slow compiles)")),
        ]
        for i, (_, measure, show) in enumerate(phases):
            try:
                measure()
            except KeyboardInterrupt:
                self.interrupted()
                for _, _, rest in phases[i:]:
                    self.show(rest)
                break
            self.show(show)
        rows = self.result["ops"] + ((self.result["model"] or {}).get("rows") or [])
        if self.result["cut"] is None and any(r["status"] == "cut" for r in rows):
            self.result["cut"] = self.deadline.reason
        self.result["complete"] = self.result["cut"] is None
        self.save()
        self.progress("done" + (f"; JSON in {self.json_path}" if self.json_path else "")
                      + (f"; cut: {self.result['cut']}" if self.result["cut"] else ""))
        return self.result

    @staticmethod
    def show(text_of: Callable[[], str | None]) -> None:
        text = text_of()
        if text:
            print("\n" + text, flush=True)

    def interrupted(self) -> None:
        self.result["cut"] = "interrupted (SIGINT)"
        rows = self.result["ops"] + ((self.result["model"] or {}).get("rows") or [])
        for row in rows:
            if row["status"] in ("pending", "running"):
                row.update(status="cut", reason="not run: interrupted")
        self.save()

    def budget(self) -> None:
        if "budget" not in self.cfg.sections:
            return
        from ..budget import PAPER, budget
        from ..model import POSTERV2

        self.progress("budget (thop and fvcore counts on one 224x224 image)")
        self._budget = budget(POSTERV2(num_classes=7))
        self.result["budget"] = {**asdict(self._budget), "paper": PAPER}
        self.save()

    def budget_table(self) -> str | None:
        if self._budget is None:
            return None
        from ..budget import format_budget
        return format_budget(self._budget)

    def ops(self, rows: list[dict[str, Any]]) -> None:
        op.measure_rows(rows, self.cfg, self.card, self.deadline, self.save, self.progress)

    def ops_table(self, rows: list[dict[str, Any]], title: str) -> str | None:
        return format_ops(rows, self.result["meta"]["card"], title) if rows else None

    def model(self) -> None:
        if not set(MODEL_SECTIONS) & set(self.cfg.sections):
            return
        if self.cfg.model_backend is not None:
            fast, why = self.cfg.model_backend, "named with --model-backend"
        else:
            fast, why = op.fastest_backend(self.first, self.cfg.device)
        notes = ["no faster backend can run here: only the reference is timed"] \
            if fast == "reference" and self.cfg.model_backend is None else []
        notes.append(f"predict's --precision auto here: {choose_precision('auto', hardware(self.cfg.device))}")
        self.result["model"] = {"fast_backend": fast, "fast_backend_rule": why,
                                "rows": model.plan_rows(self.cfg, fast), "notes": notes}
        self.save()
        model.measure_rows(self.result["model"]["rows"], self.cfg, self.deadline, self.save, self.progress)

    def model_table(self) -> str | None:
        m = self.result["model"]
        if not m:
            return None
        return format_model(m["rows"], m["notes"], f"{m['fast_backend']} ({m['fast_backend_rule']})")
