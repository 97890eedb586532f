"""The fixed list of realistic mutations `make mutation-check` applies, one at a time, each in a
scratch copy of the repository (tests/mutation/run.py).

Each is a set of exact text replacements in one file; a replacement whose text is not found
exactly once stops the check before anything runs ("pattern not found"), so that a file moved or
rewritten (the layout issue moves several of these) is noticed and the mutation updated. `tests`
are the pytest arguments run against it: the tests meant to catch it, fastest-failing first.
"""
from __future__ import annotations

from dataclasses import dataclass

GOLDEN = ("tests/test_golden.py", "tests/test_model.py")
LABELS = ("tests/test_labels_end_to_end.py", "tests/test_predict.py")
CHECKPOINTS = ("tests/test_checkpoint_keys.py", "tests/test_checkpoint.py")
FACES = ("tests/test_face_crops.py", "tests/test_predict.py")
CPU_OP = ("tests/ops/test_large_magnitudes.py", "tests/ops/test_backends.py", "-k", "cpu")


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str
    replacements: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    why: str  # what it models

    @property
    def compiled(self) -> bool:
        """Whether the extension must be rebuilt for it to take effect."""
        return self.file.startswith("csrc/")


MUTATIONS = (
    # --- the model (issue 25: 630 tests passed with each of these) ---
    Mutation("vit-token-streams-swapped", "poster_fast/model/posterv2.py",
             (("torch.cat((tokens(self.embed_q(o1)), tokens(self.embed_k(o2)), self.embed_v(o3))",
               "torch.cat((tokens(self.embed_k(o2)), tokens(self.embed_q(o1)), self.embed_v(o3))"),),
             GOLDEN, "two token streams fed to the fusion ViT in the other order"),
    Mutation("landmark-heads-transposed", "poster_fast/model/posterv2.py",
             (("landmark_map.permute(0, 2, 3, 1).reshape(b, h * w, heads, c // heads).transpose(1, 2)",
               "landmark_map.permute(0, 2, 3, 1).reshape(b, h * w, c // heads, heads).permute(0, 3, 1, 2)"),),
             GOLDEN, "the heads/channels split of the landmark queries transposed (channel c to head c % heads)"),
    Mutation("unnormalised-residual", "poster_fast/model/cross_fusion.py",
             (("return window_partition(shortcut, self.window_size), shortcut",
               "return window_partition(shortcut, self.window_size), x.permute(0, 2, 3, 1)"),),
             GOLDEN, "the window block's residual taken before the LayerNorm"),
    Mutation("layernorm-eps", "poster_fast/model/fusion_vit.py",
             (("self.norm = nn.LayerNorm(dim, eps=1e-6)", "self.norm = nn.LayerNorm(dim, eps=1e-5)"),),
             GOLDEN, "the ViT's final LayerNorm eps 1e-6 -> 1e-5 (the smallest drift: 4.4e-6)"),
    # --- class names ---
    Mutation("probabilities-under-permuted-names", "poster_fast/inference/crops.py",
             (("face.probs = {n: round(float(v), 6) for n, v in zip(names, p)}",
               "face.probs = {n: round(float(v), 6) for n, v in zip(names[::-1], p)}"),),
             LABELS, "predict writes each probability under another class's name"),
    Mutation("label-table-permuted", "poster_fast/data/labels.py",
             (('("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")',
               '("Fear", "Surprise", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")'),),
             LABELS, "RAF-DB's label table with two classes exchanged"),
    # --- checkpoints ---
    Mutation("strict-key-check-removed", "poster_fast/pretrained.py",
             (("unexpected = sorted(set(kept) - set(expected))", "unexpected = []"),
              ("model.load_state_dict(kept, strict=True)", "model.load_state_dict(kept, strict=False)")),
             CHECKPOINTS, "loading made lenient: keys the model does not have are ignored"),
    Mutation("relative-position-index-check-removed", "poster_fast/pretrained.py",
             (("if not torch.equal(kept[key], expected[key]):", "if False:"),),
             CHECKPOINTS, "a checkpoint's relative-position index no longer compared to the model's"),
    # --- faces ---
    Mutation("crop-margin-formula", "poster_fast/faces/align.py",
             (("side = max(box.w, box.h) * (1 + 2 * margin)", "side = max(box.w, box.h) * (1 + margin)"),),
             FACES, "the margin added once instead of on each side"),
    Mutation("crop-margin-default", "poster_fast/commands/predict.py",
             (('p.add_argument("--margin", type=number(CROP_MARGIN), default=0.2,',
               'p.add_argument("--margin", type=number(CROP_MARGIN), default=0.25,'),),
             FACES, "predict's default crop margin changed"),
    # --- the op ---
    Mutation("cpu-softmax-first-logit", "csrc/cpu/wmca_cpu_impl.h",
             (("const T m = row_max(s, l.Np);", "const T m = s[0];"),),
             CPU_OP, "the C++ forward's softmax shifted by the first logit, not the row maximum"),
    Mutation("cpu-table-gradient-sign", "csrc/cpu/wmca_cpu_impl.h",
             (("for (int64_t wj = 0; wj < d.ww; ++wj) t[wj] += g[hj * d.ww + wj];",
               "for (int64_t wj = 0; wj < d.ww; ++wj) t[wj] -= g[hj * d.ww + wj];"),),
             ("tests/ops/test_backends.py", "-k", "cpu"), "the C++ bias-table gradient negated"),
    Mutation("reference-index-transposed", "poster_fast/ops/reference.py",
             (("dh = rows[:, None] - rows[None, :] + wh - 1", "dh = rows[None, :] - rows[:, None] + wh - 1"),),
             ("tests/test_ops.py",), "the reference's relative-position rows taken key minus query"),
    Mutation("triton-lse-without-log-sum", "poster_fast/ops/triton/kernels.py",
             (("tl.store(LSE + row + offs_m, m_i + tl.log(l_i), mask=m_ok)",
               "tl.store(LSE + row + offs_m, m_i, mask=m_ok)"),),
             ("tests/ops/test_backends.py", "-k", "triton and windows"),
             "the Triton forward saves the row maximum as lse (the backward's probabilities unnormalised)"),
    Mutation("batchnorm-folding-without-eps", "poster_fast/rewrites.py",
             (("scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)",
               "scale = bn.weight * torch.rsqrt(bn.running_var)"),),
             ("tests/test_optimize.py",), "BatchNorm folded into its convolution without eps"),
    Mutation("non-finite-guard-removed", "poster_fast/inference/crops.py",
             (("if not bool(torch.isfinite(p).all()):", "if False:"),),
             ("tests/test_predict_outputs.py",), "a NaN output labelled as a class"),
    Mutation("atomic-write-leaves-temporary", "poster_fast/files.py",
             (("        with suppress(OSError):\n            tmp.unlink()\n", "        pass\n"),),
             ("tests/test_predict_outputs.py",), "a failed atomic write leaves its temporary file"),
)
