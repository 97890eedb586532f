"""`poster-fast export` and poster_fast.export: ONNX (the fused op's translation, dynamic batch,
onnxruntime against PyTorch under the kernels' error policy), safetensors, save_pretrained /
from_pretrained, predict on exported files, and the refusals.

The whole model is exported once (module fixture, through the command); the translation alone
is exported on small problems.
"""
from __future__ import annotations

import contextlib
import copy
import importlib.machinery
import io
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from poster_fast import POSTERV2, extras, load_checkpoint
from poster_fast.checkpoint import save_model
from poster_fast.hub import read_safetensors, save_safetensors
from poster_fast.commands.cli import main
from poster_fast.errors import CheckpointError, UsageError
from poster_fast.ops.validate import check_inputs
from wmca_utils import Case, assert_within_reference_error, make_inputs  # tests/

NAMES = [f"class{i}" for i in range(7)]  # no dataset's names: they can only come from the file


def randomised_model() -> POSTERV2:
    """Layer scales and bias tables drawn large enough that W-MCSA moves the logits."""
    torch.manual_seed(0)
    model = POSTERV2(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "gamma" in name or "relative_position_bias_table" in name:
                p.normal_(0, 0.5)
    return model.eval()


def equal_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint as `poster-fast train` writes it (channels-last weights) and its model."""
    model = randomised_model()
    path = tmp_path_factory.mktemp("trained") / "best.pt"
    save_model(path, model.to(memory_format=torch.channels_last), dataset="custom", classes=NAMES,
               epoch=4, best_acc=0.5)
    return path, model.to(memory_format=torch.contiguous_format)


# ----------------------------------------------------------------------------- ONNX

@pytest.fixture(scope="module")
def onnx_file(trained, tmp_path_factory):
    pytest.importorskip("onnxruntime", reason="ONNX export needs poster_fast[onnx]")
    pytest.importorskip("onnxscript", reason="ONNX export needs poster_fast[onnx]")
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    with contextlib.redirect_stderr(io.StringIO()) as err:  # the check runs in the tests below
        rc = main(["export", str(trained[0]), "--onnx", str(path), "--no-check"])
    assert rc == 0 and path.is_file(), err.getvalue()
    assert "onnxruntime check skipped (--no-check)" in err.getvalue()
    return path


def ort_session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_onnx_logits_match_pytorch_at_batch_1_and_3(onnx_file, trained):
    """onnxruntime's logits against the float64 model: within 3x the float32 PyTorch model's
    error (the fused kernels' policy), at two batch sizes of one file."""
    model = trained[1]
    exact = copy.deepcopy(model).double()
    session = ort_session(onnx_file)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 224, 224)
        got = torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])
        with torch.inference_mode():
            same, ref = model(x), exact(x.double())
        assert got.shape == (batch, 7)
        assert (same.double() - ref).abs().max() > 0  # float32 differs from float64: the bound is not 0
        assert_within_reference_error([got], [ref], [same], names=("logits",))


def test_onnx_batch_is_dynamic_and_metadata_names_the_classes(onnx_file):
    import onnx

    proto = onnx.load(str(onnx_file))
    assert proto.opset_import[0].version >= 18
    (images,), (logits,) = proto.graph.input, proto.graph.output
    assert [d.dim_param or d.dim_value for d in images.type.tensor_type.shape.dim] == ["batch", 3, 224, 224]
    assert [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == ["batch", 7]
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["classes"] == NAMES and meta["dataset"] == "custom" and meta["num_classes"] == 7
    assert meta["image_size"] == 224 and meta["architecture"] == "POSTERV2"
    # The fused op became ONNX operators, no custom domain.
    assert {n.domain for n in proto.graph.node} <= {""}


def test_check_onnx_passes_the_model_and_catches_other_weights(onnx_file, trained):
    """The check `poster-fast export` runs before it writes the file."""
    from poster_fast.export import check_onnx

    result = check_onnx(onnx_file, trained[1], batches=(1,))
    assert result.ok and str(result).endswith(": ok") and 0 < result.onnx_error <= result.bound
    other = copy.deepcopy(trained[1])
    with torch.no_grad():
        other.attn1.relative_position_bias_table.normal_(0, 1)  # only a W-MCSA bias table differs
    result = check_onnx(onnx_file, other, batches=(1,))
    assert not result.ok and "FAILED" in str(result)


class OpModule(torch.nn.Module):
    """One call of a compiled W-MCSA op, both of its outputs returned."""

    def __init__(self, op, table: torch.Tensor, window: tuple[int, int], scale: float) -> None:
        super().__init__()
        self.op, self.window, self.scale = op, window, scale
        self.table = torch.nn.Parameter(table)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        return self.op(q, k, v, self.table, *self.window, self.scale)


def export_op(op, case: Case, tmp_path: Path, scale: float, opset: int = 18):
    """The op exported with its translation, batch and windows dynamic; an onnxruntime session."""
    from poster_fast.ops.onnx import translation_table

    q, k, v, table = (t.detach().float() for t in make_inputs(case, torch.float32))
    module = OpModule(op, table, case.window, scale)
    batch, windows = torch.export.Dim("batch"), torch.export.Dim("windows")
    dynamic = {"q": {0: batch}, "k": {0: windows}, "v": {0: windows}}
    exported = torch.export.export(module, (q, k, v), dynamic_shapes=dynamic)
    program = torch.onnx.export(exported, dynamo=True, dynamic_shapes=dynamic, opset_version=opset,
                                input_names=["q", "k", "v"],
                                output_names=["out", "lse"], verbose=False,
                                custom_translation_table=translation_table([op]))
    program.save(tmp_path / "op.onnx")
    return ort_session(tmp_path / "op.onnx"), table


def check_translation(session, table: torch.Tensor, case: Case, scale: float) -> None:
    """out against the float64 reference within the fp32 policy; lse against float64 logsumexp."""
    from poster_fast.ops import reference

    q, k, v, _ = (t.detach() for t in make_inputs(case, torch.float32))
    feed = {"q": q.numpy(), "k": k.numpy(), "v": v.numpy()}
    got_out, got_lse = (torch.from_numpy(a) for a in session.run(None, feed))
    q64, k64, v64, table64 = (t.double() for t in (q, k, v, table))
    exact = reference.run(q64, k64, v64, table64, check_inputs(q64, k64, v64, table64, case.window, scale))
    same = reference.run(q, k, v, table, check_inputs(q, k, v, table, case.window, scale))
    assert_within_reference_error([got_out], [exact], [same], names=("out",))
    # lse: float32 sums of a few hundred terms of magnitude ~1-10: 1e-5 is tens of ulps.
    bias = reference.relative_position_bias(table64, case.window)
    lse = (scale * q64.repeat_interleave(case.windows, dim=0) @ k64.transpose(-2, -1) + bias).logsumexp(-1)
    assert got_lse.dtype == torch.float32 and got_lse.shape == lse.shape
    torch.testing.assert_close(got_lse.double(), lse, rtol=1e-5, atol=1e-5)


# (traced problem, problems run on the same file, opset): square and non-square windows, one
# and several windows per image, POSTER's level-3 shape, a later opset.
TRANSLATION_CASES = [
    (Case(2, 3, 2, (3, 4), 8), [Case(1, 1, 2, (3, 4), 8), Case(3, 2, 2, (3, 4), 8)], 18),
    (Case(2, 2, 8, (7, 7), 32), [Case(1, 1, 8, (7, 7), 32), Case(4, 3, 8, (7, 7), 32)], 18),
    (Case(3, 2, 1, (1, 5), 16), [Case(2, 4, 1, (1, 5), 16)], 21),
]


@pytest.mark.parametrize("traced, others, opset", TRANSLATION_CASES)
def test_translation_of_the_cpu_op_against_the_reference(traced, others, opset, tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX export needs poster_fast[onnx]")
    pytest.importorskip("onnxscript", reason="ONNX export needs poster_fast[onnx]")
    from poster_fast.ops import extension

    if extension.missing():
        pytest.skip(extension.missing())
    scale = 0.3
    session, table = export_op(torch.ops.poster_fast.wmca_fwd.default, traced, tmp_path, scale, opset)
    for case in [traced, *others]:
        check_translation(session, table, case, scale)


def test_translation_of_the_triton_op(tmp_path):
    """The Triton op has the same schema and translation (traced with its fake kernel only)."""
    pytest.importorskip("onnxruntime", reason="ONNX export needs poster_fast[onnx]")
    pytest.importorskip("triton", reason="the Triton op needs triton")
    import poster_fast.ops.triton.library  # noqa: F401  (registers the op)

    case = Case(2, 2, 4, (5, 3), 16)
    session, table = export_op(torch.ops.poster_fast.wmca_triton_fwd.default, case, tmp_path, 0.25)
    check_translation(session, table, Case(3, 1, 4, (5, 3), 16), 0.25)


def test_a_poster_fast_op_without_translation_is_named():
    from poster_fast.ops.onnx import translation_table

    other = types.SimpleNamespace(_schema=types.SimpleNamespace(name="poster_fast::other"))
    with pytest.raises(ValueError, match="poster_fast::other: no ONNX translation"):
        translation_table([torch.ops.aten.add.Tensor, other])
    assert translation_table([torch.ops.aten.add.Tensor]) == {}


# ----------------------------------------------------------------------------- safetensors

def test_safetensors_round_trip_of_a_channels_last_model(trained, tmp_path):
    model = copy.deepcopy(trained[1]).to(memory_format=torch.channels_last)
    state = model.state_dict()
    assert any(not t.is_contiguous() for t in state.values())  # what safetensors refuses as is
    path = save_safetensors(tmp_path / "m.safetensors", model, classes=NAMES, dataset="custom")
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    tensors, config = read_safetensors(path)
    assert equal_states(tensors, state)
    assert config["classes"] == NAMES and config["dataset"] == "custom" and config["num_classes"] == 7
    assert config["architecture"] == "POSTERV2"
    loaded = POSTERV2.from_checkpoint(path)
    assert equal_states(loaded.state_dict(), state)
    load_checkpoint(loaded, path)  # the file path itself, as for the authors' files
    loaded, recorded = POSTERV2.load_trained(path)
    assert recorded == {"num_classes": 7, "dataset": "custom", "classes": NAMES}
    assert equal_states(loaded.state_dict(), state)


def test_command_writes_safetensors_and_pretrained_and_predict_reads_them(trained, tmp_path, capsys):
    skdata = pytest.importorskip("skimage.data")
    from PIL import Image

    photo = tmp_path / "face.jpg"
    Image.fromarray(skdata.astronaut()).save(photo)
    st, folder = tmp_path / "model.safetensors", tmp_path / "hf"
    assert main(["export", str(trained[0]), "--safetensors", str(st), "--pretrained", str(folder)]) == 0
    config = json.loads((folder / "config.json").read_text())
    assert config["classes"] == NAMES and config["epoch"] == 4 and config["best_acc"] == 0.5
    probs = []
    for source in (st, folder):
        capsys.readouterr()
        assert main(["predict", str(photo), "--no-detect", "--checkpoint", str(source), "--json",
                     "--quiet", "--device", "cpu"]) == 0  # no --trusted
        doc = json.loads(capsys.readouterr().out)
        assert doc["classes"] == NAMES  # from the file: NAMES are no dataset's
        probs.append(doc["results"][0]["faces"][0]["probs"])
    assert probs[0] == probs[1]


# ----------------------------------------------------------------------------- save_pretrained

def test_save_and_from_pretrained_round_trip(trained, tmp_path):
    model = trained[1]
    folder = model.save_pretrained(tmp_path / "hf", classes=NAMES, dataset="custom")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    loaded = POSTERV2.from_pretrained(folder)
    assert loaded.config["classes"] == NAMES and loaded.config["dataset"] == "custom"
    assert equal_states(loaded.state_dict(), model.state_dict())
    # A loaded model keeps its names when saved again; existing files are refused.
    again = loaded.save_pretrained(tmp_path / "again")
    assert json.loads((again / "config.json").read_text())["classes"] == NAMES
    with pytest.raises(UsageError, match="exists"):
        loaded.save_pretrained(again)
    loaded.save_pretrained(again, classes=list("abcdefg"), overwrite=True)
    assert json.loads((again / "config.json").read_text())["classes"] == list("abcdefg")
    with pytest.raises(UsageError, match="expected 7 names"):
        model.save_pretrained(tmp_path / "bad", classes=["a"])
    assert not (tmp_path / "bad").exists()


def fake_hub(monkeypatch, folder: Path) -> dict[str, list]:
    """A huggingface_hub module that records its calls and 'downloads' `folder`."""
    calls: dict[str, list] = {"download": [], "create": [], "upload": []}
    hub = types.ModuleType("huggingface_hub")
    hub.__spec__ = importlib.machinery.ModuleSpec("huggingface_hub", None)

    def snapshot_download(repo_id, allow_patterns):
        calls["download"].append((repo_id, allow_patterns))
        return str(folder)

    class HfApi:
        def create_repo(self, repo_id, exist_ok):
            calls["create"].append(repo_id)

        def upload_folder(self, repo_id, folder_path, allow_patterns):
            calls["upload"].append((repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    hub.snapshot_download, hub.HfApi = snapshot_download, HfApi
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    return calls


def test_hub_download_and_upload_go_through_huggingface_hub(trained, tmp_path, monkeypatch):
    model = trained[1]
    calls = fake_hub(monkeypatch, tmp_path / "cache")
    model.save_pretrained(tmp_path / "cache", classes=NAMES, repo_id="someone/poster")
    assert calls["create"] == ["someone/poster"]
    assert calls["upload"] == [("someone/poster", ["config.json", "model.safetensors"])]
    loaded = POSTERV2.from_pretrained("someone/poster")
    assert calls["download"] == [("someone/poster", ["config.json", "model.safetensors"])]
    assert loaded.config["classes"] == NAMES


def test_hub_without_huggingface_hub_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(extras, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match=r"install huggingface_hub: pip install 'poster_fast\[hub\]'"):
        POSTERV2.from_pretrained("someone/poster")
    with pytest.raises(UsageError, match=r"huggingface_hub is not installed: pip install 'poster_fast\[hub\]'"):
        POSTERV2(7).save_pretrained(tmp_path / "hf", repo_id="someone/poster")
    assert not (tmp_path / "hf").exists()  # refused before writing
    with pytest.raises(CheckpointError, match="not a folder written by save_pretrained"):
        POSTERV2.from_pretrained(tmp_path / "missing" / "deeper" / "path")


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("options, message", [
    ([], "nothing to export"),
    (["--safetensors", "{tmp}/a", "--pretrained", "{tmp}/a"], "name the same path"),
    (["--pretrained", "{tmp}/hf", "--push-to-hub", "x/y", "--safetensors", "{tmp}/b", "--opset", "17"],
     "--opset: expected an integer from 18 to 99, got '17'"),
    (["--safetensors", "{tmp}/m.st", "--push-to-hub", "x/y"], "give --pretrained DIR too"),
    (["--onnx", "{tmp}/m.onnx", "--image-size", "0"], "--image-size: expected an integer from 1 to 1024, got '0'"),
    (["--safetensors", "{tmp}/existing"], "existing: exists; it is not overwritten without --force"),
    (["--safetensors", "{tmp}"], "is a folder; expected a file name"),
    (["--pretrained", "{tmp}/existing"], "is a file; expected a folder"),
])
def test_bad_options_and_outputs_are_refused_before_any_work(options, message, trained, tmp_path, capsys):
    existing = tmp_path / "existing"
    existing.write_text("keep me")
    argv = ["export", str(trained[0])] + [o.format(tmp=tmp_path) for o in options]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's type checks
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("poster-fast export: error: ") and err.count("\n") == 1
    assert message.format(tmp=tmp_path) in err
    assert existing.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_force_overwrites_and_a_missing_checkpoint_is_named(trained, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_text("old")
    assert main(["export", str(trained[0]), "--safetensors", str(out), "--force"]) == 0
    assert read_safetensors(out)[1]["classes"] == NAMES
    assert main(["export", str(tmp_path / "none.pt"), "--safetensors", str(tmp_path / "x")]) == 2
    assert "none.pt: does not exist" in capsys.readouterr().err


def test_onnx_without_its_extra_names_it(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(extras, "find_spec", lambda name: None if name.startswith("onnx") else object())
    assert main(["export", str(trained[0]), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert ("onnx, onnxscript, onnxruntime are not installed: pip install 'poster_fast[onnx]'"
            in capsys.readouterr().err)


def test_export_help_imports_nothing_heavy():
    import subprocess

    probe = ("import sys\nfrom poster_fast.commands.cli import main\ntry:\n    main(['export', '--help'])\n"
             "except SystemExit:\n    pass\nprint(sorted({m.split('.')[0] for m in sys.modules} & "
             "{'torch', 'numpy', 'onnx', 'onnxscript', 'onnxruntime', 'safetensors'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]" and "--pretrained" in out
