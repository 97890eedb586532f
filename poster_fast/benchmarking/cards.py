"""Peak rates of known GPUs, to say how far a measured kernel is from what the card can do.

Sources: the vendor datasheets, "NVIDIA H100 Tensor Core GPU" (H100 SXM, PCIe, NVL), "NVIDIA
H200 Tensor Core GPU" (H200 SXM, NVL) and "NVIDIA A100 Tensor Core GPU" (SXM4 and PCIe, 40 and
80 GB). Tensor-core figures are dense: the datasheets' "with sparsity" values halved. fp32 is
the non-tensor (FMA) rate; memory is the HBM bandwidth in GB/s (1e9 bytes/s). Standard library
only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Card:
    name: str
    fp32_tflops: float  # CUDA cores (FMA), no tensor cores
    tf32_tflops: float  # dense tensor cores
    bf16_tflops: float  # dense tensor cores
    fp16_tflops: float  # dense tensor cores
    hbm_gb_s: float

    def peak_tflops(self, dtype: str) -> float:
        """The matmul ceiling for op inputs of `dtype` ("fp32", "bf16", "fp16"): the dense tensor
        core rate; for fp32 inputs the TF32 rate (a kernel on the FMA units is capped lower, at
        `fp32_tflops`)."""
        return {"fp32": self.tf32_tflops, "bf16": self.bf16_tflops, "fp16": self.fp16_tflops}[dtype]

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)


_H100_SXM = dict(fp32_tflops=67.0, tf32_tflops=494.5, bf16_tflops=989.5, fp16_tflops=989.5)
_NVL = dict(fp32_tflops=60.0, tf32_tflops=417.5, bf16_tflops=835.5, fp16_tflops=835.5)
_A100 = dict(fp32_tflops=19.5, tf32_tflops=156.0, bf16_tflops=312.0, fp16_tflops=312.0)

# (words that must all appear in torch.cuda.get_device_name(), card); the first match wins.
KNOWN_CARDS: tuple[tuple[tuple[str, ...], Card], ...] = (
    (("H200", "NVL"), Card("H200 NVL", **_NVL, hbm_gb_s=4800.0)),
    (("H200",), Card("H200 SXM", **_H100_SXM, hbm_gb_s=4800.0)),
    (("H100", "NVL"), Card("H100 NVL", **_NVL, hbm_gb_s=3900.0)),
    (("H100", "PCIE"), Card("H100 PCIe", fp32_tflops=51.0, tf32_tflops=378.0, bf16_tflops=756.5,
                            fp16_tflops=756.5, hbm_gb_s=2000.0)),
    (("H100", "HBM3"), Card("H100 SXM", **_H100_SXM, hbm_gb_s=3350.0)),
    (("H100", "SXM"), Card("H100 SXM", **_H100_SXM, hbm_gb_s=3350.0)),
    (("A100", "PCIE", "80GB"), Card("A100 PCIe 80GB", **_A100, hbm_gb_s=1935.0)),
    (("A100", "PCIE"), Card("A100 PCIe 40GB", **_A100, hbm_gb_s=1555.0)),
    (("A100", "SXM", "80GB"), Card("A100 SXM 80GB", **_A100, hbm_gb_s=2039.0)),
    (("A100", "SXM"), Card("A100 SXM 40GB", **_A100, hbm_gb_s=1555.0)),
)


def card_for(device_name: str | None) -> Card | None:
    """The known card whose words all appear in `device_name` (case-insensitive), else None
    (unknown GPUs and CPUs: no "% of peak")."""
    name = (device_name or "").upper()
    return next((card for words, card in KNOWN_CARDS if all(w in name for w in words)), None)
