"""Checkpoints that do not fit are refused with the key named: an unexpected key (the strict key
check) and a relative-position index other than the Swin one this model computes (the kernels
compute the index from token coordinates, so a wrong stored index would otherwise be silently
ignored). Missing and mis-shaped keys: tests/test_checkpoint.py."""
from __future__ import annotations

import re

import pytest
import torch
from PIL import Image

from poster_fast import POSTERV2, CheckpointError, load_checkpoint
from poster_fast.commands.cli import main


@pytest.fixture(scope="module")
def state():
    torch.manual_seed(5)
    return dict(POSTERV2(7).state_dict())


@pytest.fixture(scope="module")
def target():
    """The model loaded into (a refused checkpoint leaves it as it was)."""
    return POSTERV2(7)


@pytest.mark.parametrize("extra", ["attn2.qkv.scale", "VIT.blocks.2.norm1.weight", "embed_q.2.bias"])
def test_unexpected_key_is_refused_and_named(state, target, extra):
    with pytest.raises(CheckpointError, match=rf"1 unexpected keys: \['{re.escape(extra)}'\]"):
        load_checkpoint(target, {**state, extra: torch.zeros(3)})


def test_unexpected_key_with_the_authors_prefix_and_dead_keys(state, target):
    """Only the 36 keys of the authors' unused modules (and thop's counters) are dropped."""
    authors = {"module." + k: v for k, v in state.items()}
    authors["module.VIT.CON1.weight"] = torch.zeros(768, 256, 1, 1)  # dropped: never used
    authors["module.attn1.total_ops"] = torch.zeros(1)  # dropped: thop's counter
    assert len(load_checkpoint(target, authors).loaded) == 711
    authors["module.VIT.head2.weight"] = torch.zeros(7, 768)
    with pytest.raises(CheckpointError, match=r"unexpected keys: \['VIT.head2.weight'\]"):
        load_checkpoint(target, authors)


@pytest.mark.parametrize("level", [1, 2, 3])
@pytest.mark.parametrize("change", ["transposed", "shifted"])
def test_wrong_relative_position_index_is_refused_and_named(state, target, level, change):
    key = f"attn{level}.relative_position_index"
    index = state[key]
    wrong = index.T.contiguous() if change == "transposed" else (index + 1) % (int(index.max()) + 1)
    assert not torch.equal(wrong, index)
    with pytest.raises(CheckpointError, match=rf"{key}: differs from the Swin relative position index"):
        load_checkpoint(target, {**state, key: wrong})
    assert torch.equal(target.state_dict()[key], index)


def test_the_command_names_the_key(state, tmp_path, capsys):
    path = tmp_path / "best.pt"
    torch.save({"state_dict": {**state, "ffn3.gamma3": torch.zeros(256)}, "num_classes": 7,
                "dataset": "rafdb", "epoch": 1, "best_acc": 0.5}, path)
    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    assert main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "unexpected keys: ['ffn3.gamma3']" in err
