"""One bench run: the selected sections in a fixed order, the JSON rewritten after every row.

Order: budget; op rows of the fused backends (in ops.BACKENDS order), then the reference and
sdpa_mask baselines, per dtype and level; the model rows; the roofline rows (the machine's
convolution and matmul rates and the model's fraction of them, per natively computed dtype) and
the profile rows (the model's time per op class); FlexAttention's op rows last (its compiles are
slow). Rows are planned up front as "pending"; a row not started when the soft
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

from . import model, op, profile, roofline
from ..device import choose_precision, hardware
from ..files import write_json
from .cards import card_for
from .config import MODEL_SECTIONS, SCHEMA, Config
from .report import format_model, format_ops, format_profile, format_roofline
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
        device_name = torch.cuda.get_device_name(cfg.device) if cuda else hardware(cfg.device).name
        card = card_for(device_name) if cuda else None
        self.cfg, self.card, self.json_path, self.progress = cfg, card, json_path, progress
        self.deadline = Deadline(cfg.time_limit)
        self._budget = None
        self.first, self.last = op.plan_rows(cfg) if "ops" in cfg.sections else ([], [])
        self.result: dict[str, Any] = {
            "schema": SCHEMA, "complete": False, "cut": None,
            "meta": meta(cfg, command, device_name, card.as_dict() if card else None),
            "budget": None, "ops": self.first + self.last, "model": None, "roofline": None, "profile": None}
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
            ("roofline", self.roofline, self.roofline_table),
            ("profile", self.profile_, self.profile_table),
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
        rows = self.rows()
        if self.result["cut"] is None and any(r["status"] == "cut" for r in rows):
            self.result["cut"] = self.deadline.reason
        self.result["complete"] = self.result["cut"] is None
        self.save()
        self.progress("done" + (f"; JSON in {self.json_path}" if self.json_path else "")
                      + (f"; cut: {self.result['cut']}" if self.result["cut"] else ""))
        return self.result

    def rows(self) -> list[dict[str, Any]]:
        """Every planned row of every section."""
        sections = [self.result[name] or {} for name in ("model", "roofline", "profile")]
        return self.result["ops"] + [row for section in sections for row in section.get("rows") or []]

    @staticmethod
    def show(text_of: Callable[[], str | None]) -> None:
        text = text_of()
        if text:
            print("\n" + text, flush=True)

    def interrupted(self) -> None:
        self.result["cut"] = "interrupted (SIGINT)"
        for row in self.rows():
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

    def _dtypes(self) -> list[str]:
        return ["fp32"] if self.cfg.roofline_dtypes is None else self.cfg.roofline_dtypes

    def _measure(self, rows: list[dict[str, Any]], what: str, measure: Callable[[dict[str, Any]], None]) -> None:
        """Run measure(row) on each row in turn, recording ok, error or cut, saving after each."""
        for row in rows:
            if self.deadline.passed():
                row.update(status="cut", reason=self.deadline.reason)
                continue
            self.progress(f"{what} {row['dtype']}")
            row["status"] = "running"
            try:
                measure(row)
                row["status"] = "ok"
            except KeyboardInterrupt:
                row.update(status="cut", reason="interrupted")
                raise
            except Exception as exc:
                row.update(status="error", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            self.save()

    def roofline(self) -> None:
        if "roofline" not in self.cfg.sections:
            return
        cfg = self.cfg
        self.progress("roofline: the model's FLOPs (FlopCounterMode, one image)")
        per_image = roofline.model_flops()
        rows = [{"dtype": d, "batch": cfg.batch, "status": "pending", "reason": ""} for d in self._dtypes()]
        self.result["roofline"] = {
            "flops_per_image": per_image, "conv_cases": [list(c) for c in roofline.CONV_CASES],
            "conv_batch": roofline.CONV_BATCH, "matmul_size": roofline.MATMUL_SIZE, "clock": cfg.clock,
            "rounds": cfg.model_iters, "rows": rows}
        self.save()
        self._measure(rows, "roofline", lambda row: row.update(roofline.measure(
            row["dtype"], cfg.batch, cfg.device, cfg.model_warmup, cfg.model_iters, per_image, cfg.clock)))

    def roofline_table(self) -> str | None:
        r = self.result["roofline"]
        return format_roofline(r) if r else None

    def profile_(self) -> None:
        if "profile" not in self.cfg.sections:
            return
        cfg = self.cfg
        rows = [{"dtype": d, "batch": cfg.batch, "status": "pending", "reason": ""} for d in self._dtypes()]
        self.result["profile"] = {"clock": cfg.clock, "rounds": cfg.model_iters, "rows": rows}
        self.save()
        if cfg.device.type != "cpu":
            for row in rows:
                row.update(status="skipped", reason="CPU only (CUDA ops run asynchronously)")
            return
        self._measure(rows, "profile", lambda row: row.update(classes=profile.profile_model(
            row["dtype"], cfg.batch, cfg.device, cfg.model_warmup, cfg.model_iters, roofline.CLOCKS[cfg.clock])))

    def profile_table(self) -> str | None:
        p = self.result["profile"]
        return format_profile(p) if p else None
