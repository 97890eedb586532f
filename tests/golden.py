"""The golden POSTER V2: a state dict anyone can regenerate, and the authors' logits for it.

Where the numbers in tests/data/posterv2_golden.json come from: the authors' own code
(Talented-Q/POSTER_V2 at commit 18de559, `pyramid_trans_expr2` of models/PosterV2_7cls.py and
models/PosterV2_8cls.py), run in float64 on the CPU, in eval mode, with the state dict that
`regenerate` draws, on `inputs()`. That run also recorded, for every drawn tensor, its sum and
the sum of its absolute values; the data file keeps them summed per top-level module (`digest`),
enough to say which part of a regenerated state dict strays from the recipe.

To rewrite the data file from that run's full output (a JSON with "inputs" and, per class
count, "logits" and "fingerprints"): `python tests/golden.py FULL_OUTPUT.json`.

The recipe, per key of the state dict in sorted order, except the relative_position_index
buffers (left as the model builds them): a torch.Generator seeded with zlib.crc32(key), one
float64 draw, the first rule that matches:
  num_batches_tracked -> zeros (int64); running_var -> 1 + 0.2 rand; running_mean -> 0.1 randn;
  relative_position_bias_table -> randn; layer-scale gamma -> 0.5 + 0.1 randn;
  1-d .weight -> 1 + 0.1 randn; .bias -> 0.05 randn; >= 2-d .weight -> randn / sqrt(fan_in)
  with fan_in = numel / shape[0]; anything else (tokens, embeddings) -> 0.02 randn.
Every tensor is far from its default initialisation (layer scales 0.5 instead of 1e-5, BN
statistics away from 0 / 1), so every part of the network moves the logits.
"""
from __future__ import annotations

import json
import math
import re
import sys
import zlib
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data" / "posterv2_golden.json"
SKIPPED = "relative_position_index"


def draw(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The recipe's tensor for `key`."""
    gen = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    f64 = dict(generator=gen, dtype=torch.float64)
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        return 1 + 0.2 * torch.rand(shape, **f64)
    if key.endswith("running_mean"):
        return 0.1 * torch.randn(shape, **f64)
    if "relative_position_bias_table" in key:
        return torch.randn(shape, **f64)
    if "gamma" in key:
        return 0.5 + 0.1 * torch.randn(shape, **f64)
    if key.endswith(".weight") and len(shape) == 1:
        return 1 + 0.1 * torch.randn(shape, **f64)
    if key.endswith(".bias"):
        return 0.05 * torch.randn(shape, **f64)
    if key.endswith(".weight"):
        return torch.randn(shape, **f64) / math.sqrt(math.prod(shape) / shape[0])
    return 0.02 * torch.randn(shape, **f64)


def regenerate(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The recipe's state dict for `model`'s keys and shapes (float64; the index buffers left out)."""
    return {key: draw(key, tuple(value.shape)) for key, value in sorted(model.state_dict().items())
            if not key.endswith(SKIPPED)}


def fingerprint(t: torch.Tensor) -> tuple[float, float]:
    t = t.double()
    return t.sum().item(), t.abs().sum().item()


def digest(fingerprints: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Per top-level module, in sorted key order: [tensors, sum of the sums, sum of the |.| sums]."""
    out: dict[str, list[float]] = {}
    for key in sorted(fingerprints):
        total = out.setdefault(key.split(".")[0], [0, 0.0, 0.0])
        total[0] += 1
        total[1] += fingerprints[key][0]
        total[2] += fingerprints[key][1]
    return out


def load() -> dict:
    return json.loads(DATA.read_text())


def inputs(golden: dict) -> torch.Tensor:
    spec = golden["inputs"]
    return torch.randn(*spec["shape"], dtype=torch.float64,
                       generator=torch.Generator().manual_seed(spec["seed"]))


def derive(full_output: Path) -> dict:
    """The data file's content from the authors' run's full output."""
    full = json.loads(full_output.read_text())
    expected = "torch.randn(2, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(7))"
    if full["inputs"] != expected:
        raise SystemExit(f"{full_output}: inputs {full['inputs']!r}; this script expects {expected!r}")
    return {
        "about": "tests/golden.py says where these numbers come from and how to rewrite them",
        "inputs": {"seed": 7, "shape": [2, 3, 224, 224]},
        "models": {n: {"logits": m["logits"], "digest": digest(m["fingerprints"])}
                   for n, m in sorted(full["models"].items())},
    }


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/golden.py FULL_OUTPUT.json")
    # one line per list: the logits of an image, a module's digest
    text = json.dumps(derive(Path(sys.argv[1])), indent=1)
    DATA.write_text(re.sub(r"\[[^\[\]{}]*\]", lambda m: " ".join(m.group().split()), text) + "\n")
    print(f"wrote {DATA}")
