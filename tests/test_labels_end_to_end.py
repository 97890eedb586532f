"""Class names end to end, where the right answer is known: a model whose logits are a chosen
vector whatever the photo (head weights zero, head bias distinct per class), through predict's
JSON, CSV, table and annotated photo and the Python API, for each dataset's label table, a
checkpoint that records its own class names, --dataset and --classes. Any permutation of names
against outputs, anywhere, gives some class another class's probability, and fails.

The label tables are written here from the datasets' own numbering (not read from the library):
output i is the i-th class folder in sorted order, i.e. official label i+1 for RAF-DB and i for
AffectNet; CAER-S's class folders are emotion names, sorted.
"""
from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageChops

from command_utils import recognizer
from poster_fast import POSTERV2
from poster_fast.commands.cli import main
from poster_fast.data.images import load_image
from poster_fast.inference.classifier import load_classifier
from poster_fast.inference.outputs import draw_faces
from poster_fast.inference.crops import Face
from poster_fast.inference.predict import predict_files

skdata = pytest.importorskip("skimage.data")
AFFECTNET = ["Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt"]
OFFICIAL = {
    "rafdb": ["Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"],  # labels 1..7
    "affectnet7": AFFECTNET[:7],  # labels 0..6
    "affectnet8": AFFECTNET,  # labels 0..7
    "caers": ["Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"],
}
RECORDED = ["calm", "glad", "cross", "tired", "amazed", "scared", "bored"]


def logits(num_classes: int, favoured: int) -> list[float]:
    """Distinct values, `favoured` the largest; all exact in bfloat16 and float16."""
    values = [0.25 * i for i in range(num_classes)]
    values[favoured] = 3.0
    return values


def expected_probs(names: list[str], favoured: int) -> dict[str, float]:
    z = [math.exp(x) for x in logits(len(names), favoured)]
    return {name: p / sum(z) for name, p in zip(names, z)}


def biased_model(num_classes: int, favoured: int) -> POSTERV2:
    torch.manual_seed(0)
    model = POSTERV2(num_classes)
    with torch.no_grad():
        model.VIT.head.linear.weight.zero_()
        model.VIT.head.linear.bias.copy_(torch.tensor(logits(num_classes, favoured)))
    return model


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(path)
    return path


# name -> (checkpoint entries besides the state dict, predict options, favoured output, names expected)
CASES = {
    **{f"table-{d}": ({"dataset": d}, [], fav, names)
       for (d, names), fav in zip(OFFICIAL.items(), (3, 5, 7, 1))},
    "recorded-names": ({"dataset": "mine", "classes": RECORDED}, [], 2, RECORDED),
    "option-dataset": ({"dataset": "mine", "classes": RECORDED}, ["--dataset", "rafdb"], 6, OFFICIAL["rafdb"]),
    "option-classes": ({"dataset": "rafdb"}, ["--classes", ",".join(RECORDED[::-1])], 4, RECORDED[::-1]),
}


def checkpoint(folder, case: str):
    meta, _, favoured, names = CASES[case]
    path = folder / f"{case}.pt"
    torch.save({"state_dict": biased_model(len(names), favoured).state_dict(), "num_classes": len(names),
                "epoch": 1, "best_acc": 0.5, **meta}, path)
    return path


def assert_probs(got: dict[str, float], want: dict[str, float], tol: float = 2e-6) -> None:
    assert list(got) == list(want)
    for name in want:
        assert got[name] == pytest.approx(want[name], abs=tol), f"{name}: {got[name]} != {want[name]}"


@pytest.mark.parametrize("case", list(CASES))
def test_predict_outputs_name_the_favoured_class(case, photo, tmp_path, capsys):
    _, options, favoured, names = CASES[case]
    want = expected_probs(names, favoured)
    label = names[favoured]
    out_json, out_csv, ann = tmp_path / "p.json", tmp_path / "p.csv", tmp_path / "ann"
    assert main(["predict", str(photo), "--checkpoint", str(checkpoint(tmp_path, case)), *options, "--device", "cpu",
                 "--json", str(out_json), "--csv", str(out_csv), "--annotate", str(ann), "--quiet"]) == 0
    table = capsys.readouterr().out

    doc = json.loads(out_json.read_text())
    assert doc["classes"] == names
    (face,) = doc["results"][0]["faces"]
    assert face["label"] == label and face["score"] == pytest.approx(want[label], abs=2e-6)
    assert_probs(face["probs"], want)

    with out_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        (row,) = list(reader)
    first = reader.fieldnames.index(names[0])
    assert reader.fieldnames[first:first + len(names)] == names
    assert row["label"] == label
    assert_probs({n: float(row[n]) for n in names}, want)

    (line,) = [line for line in table.splitlines() if line.startswith(str(photo))]
    assert line.split()[-2:] == [label, f"{want[label]:.3f}"]

    x, y, w, h = face["box"]
    drawn = Image.open(ann / "astronaut.png").convert("RGB")

    def rendering(name: str) -> Image.Image:
        from poster_fast.faces import Box

        marks = None if face["landmarks"] is None else np.array(list(face["landmarks"].values()))
        return draw_faces(load_image(photo), [Face(Box(x, y, w, h), face["detection_score"], marks, name,
                                                   face["score"])])

    assert ImageChops.difference(drawn, rendering(label)).getbbox() is None, "the annotation is not the label's"
    assert all(ImageChops.difference(drawn, rendering(other)).getbbox() is not None
               for other in names if other != label)


@pytest.mark.parametrize("case", ["recorded-names", "table-affectnet8"])
def test_python_api_names_the_favoured_class(case, photo, tmp_path):
    _, _, favoured, names = CASES[case]
    want = expected_probs(names, favoured)
    classifier = load_classifier(checkpoint(tmp_path, case), device="cpu")
    assert classifier.classes == names
    probs = classifier.probabilities(torch.zeros(2, 3, 64, 64))
    assert probs.shape == (2, len(names))
    for p in probs:
        assert_probs(dict(zip(names, p.tolist())), want)
    (result,) = predict_files([photo], recognizer(classifier), progress=False)
    (face,) = result.faces
    assert face.label == names[favoured]
    assert_probs(face.probs, want)
