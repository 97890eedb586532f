"""Whole-model rows: inference images/s, training-step time and batch-1 latency of a random-
weight POSTERV2. Per dtype: the plain model with reference attention (under autocast for bf16 and
fp16), the plain model with the fastest backend, and `optimize(...)` with it, which for inference
is what predict and evaluate run at that precision (inference.classifier.prepare_for_inference:
weights held in the dtype); the plain float32 model is every row's second baseline."""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F

from .config import MODEL_SECTIONS, Config
from .op import DTYPES
from .timing import Deadline, Progress, time_ms

Row = dict[str, Any]
BASELINE = ("fp32", "reference")  # (dtype, backend) of the row every "x fp32" ratio divides


class ModelBench:
    """A random-weight POSTERV2 with its optimizer and two rotated input batches, plus batch-1 inputs."""

    def __init__(self, device: torch.device, batch: int, seed: int = 0) -> None:
        from ..model import POSTERV2

        self.device = device
        self.model = POSTERV2(num_classes=7).to(device)
        self.opt = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=1e-6)
        gen = torch.Generator(device=device).manual_seed(seed)
        self.images = [torch.randn(batch, 3, 224, 224, generator=gen, device=device) for _ in range(2)]
        self.labels = torch.randint(0, 7, (batch,), generator=gen, device=device)
        self.singles = [torch.randn(1, 3, 224, 224, generator=gen, device=device) for _ in range(2)]
        self.optimized: dict[tuple[str, bool, str], tuple[torch.nn.Module, torch.optim.Optimizer | None]] = {}

    def variant(self, backend: str, optimized: bool, train: bool,
                dtype: str) -> tuple[torch.nn.Module, torch.optim.Optimizer | None]:
        """The plain model with `backend`, or, built once per mode and dtype, predict's model at
        precision `dtype` (inference) or `optimize(model, "train", dtype)` (training)."""
        if not optimized:
            self.model.attn_backend = backend
            return self.model, self.opt
        key = (backend, train, dtype)
        if key not in self.optimized:
            from ..inference.classifier import prepare_for_inference
            from ..optimize import optimize

            if train:
                fast = optimize(self.model, "train", dtype=DTYPES[dtype], attn_backend=backend)
                opt = torch.optim.Adam([p for p in fast.parameters() if p.requires_grad], lr=1e-6)
            else:  # no trainable tensors, no optimizer
                fast, opt = prepare_for_inference(self.model, self.device, dtype, attn_backend=backend)[0], None
            self.optimized[key] = fast, opt
        return self.optimized[key]

    def step(self, mode: str, backend: str, dtype: str, optimized: bool = False) -> Callable[[int], None]:
        """A step taking a rotation index: "infer" (eval, no_grad), "latency" (the same at batch 1)
        or "train" (zero_grad + fwd + CE + bwd + Adam). The plain model runs fp16/bf16 under
        autocast; `optimized` times the optimized model instead (see `variant`), which sets its
        own precision."""
        model, opt = self.variant(backend, optimized, mode == "train", dtype)
        model.train(mode == "train")
        torch_dtype = DTYPES[dtype]
        outer = not optimized and torch_dtype != torch.float32
        autocast = lambda: torch.autocast(self.device.type, dtype=torch_dtype, enabled=outer)
        scaler = torch.amp.GradScaler(self.device.type, enabled=torch_dtype == torch.float16)
        xs = self.singles if mode == "latency" else self.images

        def infer(i: int) -> None:
            with torch.no_grad(), autocast():
                model(xs[i % 2])

        def train(i: int) -> None:
            assert opt is not None
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(model(xs[i % 2]), self.labels)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

        return train if mode == "train" else infer


def plan_rows(cfg: Config, fast: str) -> list[Row]:
    """The plain fp32 model with reference attention (the baseline), then per dtype: reference
    attention (for fp32, the baseline itself), the fast backend, optimize(fast); all "pending"."""
    variants = [("reference", "reference", False)] + ([(fast, fast, False)] if fast != "reference" else [])
    variants.append((f"optimize({fast})", fast, True))
    dtypes = list(dict.fromkeys([BASELINE[0], *cfg.dtypes]))
    return [{"backend": label, "attn_backend": name, "optimized": optimized, "dtype": dtype,
             "batch": cfg.model_batch, "status": "pending", "reason": ""}
            for dtype in dtypes for label, name, optimized in variants
            if dtype in cfg.dtypes or (dtype, label) == BASELINE]


def measure_rows(rows: list[Row], cfg: Config, deadline: Deadline, save: Callable[[], None],
                 progress: Progress) -> None:
    """Time each row's modes (infer, train, latency: those in cfg.sections), saving after each."""
    modes = [m for m in MODEL_SECTIONS if m in cfg.sections]
    if deadline.passed():
        for row in rows:
            row.update(status="cut", reason=deadline.reason)
        return
    progress(f"model: building POSTERV2 and inputs, batch {cfg.model_batch}")
    mb = ModelBench(cfg.device, cfg.model_batch)
    for row in rows:
        row["status"] = "running"
        try:
            for mode in modes:
                if deadline.passed():
                    raise _Cut(deadline.reason)
                progress(f"model {row['dtype']} {row['backend']} {mode}")
                _measure(row, mode, mb, cfg)
                link_speedups(rows)
                save()
            row["status"] = "ok"
        except _Cut as cut:
            row.update(status="cut", reason=str(cut))
        except KeyboardInterrupt:
            row.update(status="cut", reason="interrupted")
            raise
        except Exception as exc:
            row.update(status="error", reason=f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            if cfg.device.type == "cuda":
                torch.cuda.empty_cache()
        save()


class _Cut(Exception):
    pass


def _measure(row: Row, mode: str, mb: ModelBench, cfg: Config) -> None:
    batch = cfg.model_batch
    if mode == "latency" and batch == 1 and "infer_ms" in row:
        row["latency_b1_ms"] = row["infer_ms"]  # the same measurement
        return
    if mode == "train" and cfg.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(cfg.device)
    step = mb.step(mode, row["attn_backend"], row["dtype"], row["optimized"])
    ms = time_ms(step, cfg.device, cfg.model_warmup, cfg.model_iters)
    if mode == "infer":
        row.update(infer_ms=ms, infer_img_s=batch / ms * 1e3)
    elif mode == "train":
        row["train_ms"] = ms
        if cfg.device.type == "cuda":
            row["train_peak_gib"] = torch.cuda.max_memory_allocated(cfg.device) / 2 ** 30
    else:
        row["latency_b1_ms"] = ms


def link_speedups(rows: list[Row]) -> None:
    """Per measurement, from the same run: x ref (`*_speedup`) = the dtype's reference-attention
    time / the row's, x fp32 (`*_vs_fp32`) = the plain fp32 model's time / the row's."""
    refs = {r["dtype"]: r for r in rows if r["backend"] == "reference"}
    base = refs.get(BASELINE[0], {})
    for row in rows:
        ref = refs.get(row["dtype"], {})
        for key in ("infer_ms", "train_ms", "latency_b1_ms"):
            if key in row and key in ref:
                row[key.replace("_ms", "_speedup")] = ref[key] / row[key]
            if key in row and key in base:
                row[key.replace("_ms", "_vs_fp32")] = base[key] / row[key]
