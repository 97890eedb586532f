"""The budget pins the paper's numbers (thop convention) and fvcore's, within 0.5%."""
import pytest

from poster_fast import POSTERV2
from poster_fast.budget import budget, format_budget


def within(value: float, target: float, rel: float = 0.005) -> bool:
    return abs(value - target) <= rel * target


@pytest.mark.parametrize("num_classes,params", [(7, 43_753_941), (8, 43_754_710)])
def test_budget_numbers(num_classes, params):
    pytest.importorskip("fvcore")
    b = budget(POSTERV2(num_classes))
    assert b.params == params and b.frozen == 911_232 and b.trainable == params - 911_232
    assert sum(b.stage_params.values()) == params
    assert within(b.thop_params, 43_724_311) and within(b.thop_macs, 8_482_266_176)
    assert within(b.fvcore_macs, 8_612_845_056)
    assert sum(b.stage_fvcore_macs.values()) == b.fvcore_macs
    assert sum(b.stage_thop_macs.values()) == b.thop_macs
    text = format_budget(b)
    assert "43,7" in text and "thop MACs" in text and "fvcore MACs" in text
