"""Loading the authors' checkpoint layouts, and the errors for files that do not fit."""
from __future__ import annotations

import functools
import io
import pickle
import re

import pytest
import torch

from poster_fast import POSTERV2, CheckpointError, load_backbones, load_checkpoint
from poster_fast.checkpoint import UNUSED_KEY


def authors_style_state(model: POSTERV2) -> dict[str, torch.Tensor]:
    """The live keys plus the 36 keys of the authors' never-used modules, DataParallel-prefixed."""
    state = dict(model.state_dict())
    extra = {
        "face_landback.output_layer.linear.weight": torch.zeros(136, 512),
        "ir_back.output_layer.3.weight": torch.zeros(512, 8),
        "VIT.patch_embed.proj.weight": torch.zeros(768, 256, 1, 1),
        "VIT.eca_block.conv.weight": torch.zeros(1, 1, 5),
        "VIT.blocks.0.conv.weight": torch.zeros(148, 148, 1),
        "VIT.IRLinear2.bias": torch.zeros(512),
    }
    return {"module." + k: v for k, v in {**state, **extra}.items()}


def save(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(3)
    return POSTERV2(7)


def test_round_trip_with_prefixes_and_unused_keys(source):
    target = POSTERV2(7)
    report = load_checkpoint(target, save({"epoch": 3, "state_dict": authors_style_state(source)}))
    assert len(report.loaded) == 711 and len(report.dropped_unused) == 6
    for key, value in source.state_dict().items():
        assert torch.equal(value, target.state_dict()[key]), key


def test_bare_state_dict_and_from_checkpoint_infers_classes():
    eight = POSTERV2(8)
    model = POSTERV2.from_checkpoint(save(eight.state_dict()))
    assert model.num_classes == 8
    assert torch.equal(model.VIT.head.linear.weight, eight.VIT.head.linear.weight)


def test_unused_key_pattern_covers_the_36_dead_keys():
    dead = ["face_landback.output_layer.bn.running_var", "ir_back.output_layer.0.num_batches_tracked",
            "VIT.CON1.weight", "VIT.IRLinear1.weight", "VIT.blocks.1.conv.bias"]
    assert all(UNUSED_KEY.match(k) for k in dead)
    assert not any(UNUSED_KEY.match(k) for k in POSTERV2(7).state_dict())


def test_wrong_class_count_is_named(source):
    with pytest.raises(CheckpointError, match="checkpoint has 7 classes.*model 8"):
        load_checkpoint(POSTERV2(8), source.state_dict())


def test_missing_and_misshaped_keys_are_listed(source):
    state = dict(source.state_dict())
    del state["attn2.qkv.bias"]
    state["ffn1.gamma1"] = torch.zeros(65)
    with pytest.raises(CheckpointError, match=r"missing keys: \['attn2.qkv.bias'\].*ffn1.gamma1.*\(65,\)"):
        load_checkpoint(POSTERV2(7), state)


def test_not_a_checkpoint():
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_checkpoint(POSTERV2(7), save({"epoch": 1, "best_acc": 0.5}))


class RecorderMeter:  # stands in for the authors' class pickled into their training files
    def __init__(self):
        self.epoch_losses = [1.0, 0.5]


def test_pickled_objects_need_trusted(source, monkeypatch):
    obj = {"state_dict": source.state_dict(), "recorder": RecorderMeter()}
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_module=pickle)
    monkeypatch.delattr(__import__(__name__), "RecorderMeter")  # the class is gone at load time
    buf.seek(0)
    with pytest.raises(CheckpointError, match="trusted=True"):
        load_checkpoint(POSTERV2(7), buf)
    buf.seek(0)
    assert len(load_checkpoint(POSTERV2(7), buf, trusted=True).loaded) == 711


def test_backbone_files(source):
    model = POSTERV2(7)
    landmark = {"state_dict": {**{k: v for k, v in source.face_landback.state_dict().items()},
                               "output_layer.linear.weight": torch.zeros(136, 512)}}
    evolve = {}  # face.evoLVe numbering: body.0..20 for the three stages used here
    offsets = {"body1": 0, "body2": 3, "body3": 7}
    for key, value in source.ir_back.state_dict().items():
        stage, unit, rest = key.split(".", 2) if key.startswith("body") else (key, None, None)
        evolve[f"body.{offsets[stage] + int(unit)}.{rest}" if unit is not None else key] = value
    evolve["output_layer.3.weight"] = torch.zeros(512, 25088)
    reports = load_backbones(model, ir50=save(evolve), landmark=save(landmark))
    assert reports["ir50"].dropped_other == ["output_layer.3.weight"]
    for key, value in source.ir_back.state_dict().items():
        assert torch.equal(model.ir_back.state_dict()[key], value), key
    assert torch.equal(model.face_landback.conv_6_sep.bn.running_mean,
                       source.face_landback.conv_6_sep.bn.running_mean)
    with pytest.raises(CheckpointError, match="no tensor of the file matches"):
        load_backbones(model, ir50=save({"foo.weight": torch.zeros(3)}))


def test_our_files_best_and_last(tmp_path):
    """best.pt holds the model and its metadata; last.pt adds what --resume needs; a best.pt
    given where a training state is expected is refused with the missing entries named."""
    from poster_fast.checkpoint import (MODEL_META, TRAINING_STATE, load_training_state, save_model,
                                        save_training_state)

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.5)
    meta = {"dataset": "rafdb", "classes": ["a", "b"], "epoch": 4, "best_acc": 0.75}
    save_model(tmp_path / "best.pt", net, **meta)
    save_training_state(tmp_path / "last.pt", net, opt, sched, best_epoch=3, **meta)
    assert not list(tmp_path.glob("*.tmp"))
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert set(best) == {"state_dict", *MODEL_META} and best["num_classes"] == 2
    last = load_training_state(tmp_path / "last.pt")
    assert set(last) == {"state_dict", *MODEL_META, *TRAINING_STATE, "options"} and last["best_epoch"] == 3
    assert torch.equal(last["state_dict"]["weight"], net.weight)
    with pytest.raises(CheckpointError, match="not a training state.*missing best_epoch, optimizer, scheduler"
                                              ".*a best.pt holds the model only: resume from last.pt"):
        load_training_state(tmp_path / "best.pt")


def test_load_trained_reads_the_metadata(tmp_path, source):
    path = tmp_path / "best.pt"
    torch.save({"state_dict": source.state_dict(), "num_classes": 7, "dataset": "rafdb",
                "classes": list("abcdefg"), "epoch": 2, "best_acc": 0.5}, path)
    model, meta = POSTERV2.load_trained(path)
    assert model.num_classes == 7 and meta["classes"] == list("abcdefg") and meta["epoch"] == 2
    assert torch.equal(model.VIT.head.linear.weight, source.VIT.head.linear.weight)
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        POSTERV2.load_trained(tmp_path / "nope.pt")


# ----------------------------------------------------------------------------- files that are not checkpoints

def bad_files(folder) -> dict[str, tuple[object, str]]:
    """name -> (path, what the CheckpointError must say)."""
    good = folder / "good.pt"
    torch.save({"state_dict": {"a": torch.zeros(4000)}}, good)
    data = good.read_bytes()
    files = {
        "tensor": (torch.zeros(3), "not a checkpoint: expected a state dict.*found Tensor"),
        "empty": (b"", "the file is empty"),
        "text": (b"epoch 3: accuracy 0.9\n" * 20, "not a PyTorch checkpoint"),
        "random": (bytes(range(256)) * 40, "not a PyTorch checkpoint"),
        "truncated": (data[: len(data) // 2], "damaged zip archive"),
        "pickled_int": (pickle.dumps(5, protocol=2), "not a PyTorch checkpoint"),
        "nan": ({"state_dict": {"w": torch.tensor([float("nan")])}}, None),
    }
    out = {}
    for name, (content, message) in files.items():
        path = folder / f"{name}.pt"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        out[name] = (path, message)
    (folder / "dir.pt").mkdir()
    out["directory"] = (folder / "dir.pt", "is a folder, not a checkpoint file")
    out["missing"] = (folder / "missing.pt", "does not exist")
    return out


model7 = functools.cache(lambda: POSTERV2(7))  # files that cannot be read leave it unchanged
LOADERS = {
    "load_checkpoint": lambda path: load_checkpoint(model7(), path),
    "from_checkpoint": lambda path: POSTERV2.from_checkpoint(path),
    "load_trained": lambda path: POSTERV2.load_trained(path),
    "load_training_state": lambda path: __import__("poster_fast.checkpoint").checkpoint.load_training_state(path),
    "load_backbones": lambda path: load_backbones(model7(), ir50=path),
    "trusted": lambda path: load_checkpoint(model7(), path, trusted=True),
}
BAD = ["tensor", "empty", "text", "random", "truncated", "pickled_int", "directory", "missing"]


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("loader", list(LOADERS))
@pytest.mark.parametrize("kind", BAD)
def test_every_read_failure_is_a_checkpoint_error_naming_file_and_cause(bad, kind, loader):
    path, message = bad[kind]
    if kind == "tensor" and loader == "load_training_state":
        message = "not a training state.*found Tensor"
    with pytest.raises(CheckpointError) as info:
        LOADERS[loader](path)
    assert str(path) in str(info.value)
    assert re.search(message, str(info.value)), str(info.value)


def test_non_finite_weights_are_refused(bad):
    path, _ = bad["nan"]
    state = {k: v.clone() for k, v in model7().state_dict().items()}
    state["VIT.head.linear.weight"][0, 0] = float("nan")
    torch.save({"state_dict": state}, path)
    for load in (lambda: load_checkpoint(model7(), path), lambda: LOADERS["load_trained"](path)):
        with pytest.raises(CheckpointError, match=f"{path}: 1 tensors of the checkpoint hold NaN.*VIT.head.linear"):
            load()


@pytest.mark.parametrize("kind", ["tensor", "empty", "truncated", "directory"])
def test_the_cli_reports_a_bad_checkpoint_in_one_line(bad, kind, tmp_path, capsys):
    from PIL import Image

    from poster_fast.commands.cli import main

    Image.new("RGB", (32, 32)).save(tmp_path / "x.png")
    path, message = bad[kind]
    if kind == "directory":
        message = "--checkpoint .*: is a folder without config.json; expected a checkpoint file"
    assert main(["predict", str(tmp_path / "x.png"), "--checkpoint", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err) and str(path) in err


def test_bad_metadata_is_a_checkpoint_error(tmp_path, source):
    path = tmp_path / "meta.pt"
    torch.save({"state_dict": source.state_dict(), "classes": 7, "dataset": "rafdb"}, path)
    with pytest.raises(CheckpointError, match="entry 'classes' should be"):
        POSTERV2.load_trained(path)


def test_bad_arguments_of_the_model_api():
    for value, error in (("7", TypeError), (0, ValueError), (1, ValueError), (10_001, ValueError), (True, TypeError),
                         (7.0, TypeError)):
        with pytest.raises(error, match="num_classes: expected an integer from 2 to 10000"):
            POSTERV2(num_classes=value)
    with pytest.raises(ValueError, match="attn_backend: expected one of auto, .*got 'bogus'"):
        POSTERV2(attn_backend="bogus")
    with pytest.raises(TypeError, match="num_classes"):
        POSTERV2.from_checkpoint({}, num_classes="8")
