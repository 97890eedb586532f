"""Live input (`--camera INDEX`, stream URLs): no camera exists here, so a stand-in capture object
(what cv2.VideoCapture gives: read, get, isOpened, release) serves the astronaut photo as frames.
--max-frames and --duration end it, the --jsonl timeline reaches its file one line per frame while
predict runs, and Ctrl-C ends with status 130 and every output valid."""
from __future__ import annotations

import csv
import json
import threading
import time

import numpy as np
import pytest
import torch

from command_utils import FakeClassifier, run
from poster_fast.commands.cli import main
from poster_fast.inference import video
from poster_fast.inference.outputs import Timeline

skdata = pytest.importorskip("skimage.data")
pytest.importorskip("cv2")


class StandInCapture:
    """A camera that never ends (or ends after `frames`): the astronaut, in BGR, every `interval` s."""

    def __init__(self, frames: int | None = None, interval: float = 0.01) -> None:
        self.frames, self.interval, self.read_count = frames, interval, 0
        self.image = np.ascontiguousarray(skdata.astronaut()[..., ::-1])
        self.released = threading.Event()

    def isOpened(self) -> bool:  # noqa: N802 (cv2's name)
        return True

    def get(self, prop: int) -> float:
        return 0.0  # cameras often give no frame rate

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.released.is_set() or (self.frames is not None and self.read_count >= self.frames):
            return False, None
        time.sleep(self.interval)
        self.read_count += 1
        return True, self.image.copy()

    def release(self) -> None:
        self.released.set()


@pytest.fixture
def camera(monkeypatch):
    captures: list[StandInCapture] = []

    def open_capture(source: str) -> StandInCapture:
        assert video.is_live(source), source
        captures.append(StandInCapture())
        return captures[-1]
    monkeypatch.setattr(video, "open_capture", open_capture)
    return captures


class Classifier(FakeClassifier):
    """Records, at each batch, how many lines the timeline file holds; Ctrl-C at batch `stop`."""

    def __init__(self, timeline=None, stop: int | None = None) -> None:
        super().__init__()
        self.timeline, self.stop, self.lines_at_batch = timeline, stop, []

    def probabilities(self, batch: torch.Tensor) -> torch.Tensor:
        if self.stop is not None and len(self.lines_at_batch) == self.stop:
            raise KeyboardInterrupt
        if self.timeline is not None:
            self.lines_at_batch.append(len(self.timeline.read_text().splitlines()) if self.timeline.exists() else -1)
        else:
            self.lines_at_batch.append(0)
        return super().probabilities(batch)


ARGS = ["--allow-random", "--quiet", "--image-size", "32", "--batch-size", "1", "--device", "cpu"]


def use(monkeypatch, classifier: Classifier) -> None:
    monkeypatch.setattr("poster_fast.inference.classifier.random_classifier", lambda **options: classifier)


def test_camera_max_frames_and_a_timeline_followed_while_it_runs(camera, monkeypatch, tmp_path):
    lines, out = tmp_path / "t.jsonl", tmp_path / "t.json"
    classifier = Classifier(timeline=lines)
    use(monkeypatch, classifier)
    argv = ["predict", "--camera", "0", "--max-frames", "4", "--jsonl", str(lines), "--json", str(out), *ARGS]
    assert main(argv) == 0
    # Frames are classified in order, a batch each: at frame k's batch, frames 0..k-1 are in the file.
    assert classifier.lines_at_batch == [0, 1, 2, 3]
    entries = [json.loads(line) for line in lines.read_text().splitlines()]
    assert [e["file"] for e in entries] == ["camera:0"] * 4
    frames = [e["frame"] for e in entries]
    assert frames == sorted(frames) and len(set(frames)) == 4
    assert all(len(e["faces"]) == 1 and e["faces"][0]["landmarks"] and e["faces"][0]["label"] for e in entries)
    (result,) = json.loads(out.read_text())["results"]
    assert result["live"] is True and [f["frame"] for f in result["frames"]] == frames
    assert camera[0].released.wait(5)


def test_camera_duration(camera, monkeypatch, tmp_path):
    use(monkeypatch, Classifier())
    out = tmp_path / "t.json"
    start = time.monotonic()
    assert main(["predict", "--camera", "1", "--duration", "0.5", "--json", str(out), *ARGS]) == 0
    assert time.monotonic() - start < 60
    (result,) = json.loads(out.read_text())["results"]
    assert result["frames"] and all(f["time"] < 0.5 + 1e-6 for f in result["frames"][:-1])
    assert camera[0].released.wait(5)


def test_ctrl_c_ends_with_130_and_valid_outputs(camera, monkeypatch, tmp_path, capsys):
    lines, out, table = tmp_path / "t.jsonl", tmp_path / "t.json", tmp_path / "t.csv"
    use(monkeypatch, Classifier(stop=3))
    code = main(["predict", "rtsp://example.org/live/cam1", "--jsonl", str(lines), "--json", str(out),
                 "--csv", str(table), *ARGS])
    assert code == 130
    assert "interrupted" in capsys.readouterr().err
    entries = [json.loads(line) for line in lines.read_text().splitlines()]
    (result,) = json.loads(out.read_text())["results"]
    assert len(entries) == len(result["frames"]) == 3  # the frames classified before Ctrl-C
    assert [e["frame"] for e in entries] == [f["frame"] for f in result["frames"]]
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 3 and all(r["file"] == "rtsp://example.org/live/cam1" for r in rows)
    assert camera[0].released.wait(5)
    assert not list(tmp_path.glob("*.tmp"))


def test_timeline_to_stdout_one_line_per_frame(camera, monkeypatch, capsys):
    use(monkeypatch, Classifier())
    assert main(["predict", "--camera", "0", "--max-frames", "2", "--jsonl", *ARGS]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(json.loads(line)["file"] == "camera:0" for line in out)


def test_timeline_file_has_each_line_at_once(tmp_path):
    from poster_fast.faces import Box
    from poster_fast.inference.crops import Face
    from poster_fast.inference.video import FrameResult, VideoResult

    path = tmp_path / "t.jsonl"
    timeline = Timeline(str(path))
    source = VideoResult("camera:0", live=True)
    for k in range(3):
        frame = FrameResult("camera:0", index=k, time=k / 10, video=source,
                            faces=[Face(Box(1, 2, 3, 4), 0.9, None, "x", 0.5, {"x": 0.5, "y": float("nan")})])
        timeline(frame)
        written = path.read_text().splitlines()  # before close: already on disk
        assert len(written) == k + 1 and json.loads(written[-1])["frame"] == k
        assert json.loads(written[-1])["faces"][0]["probs"]["y"] is None  # NaN as null: valid JSON
    timeline.close()


@pytest.mark.parametrize("argv,message", [
    ([], "nothing to read: give INPUT files, folders or stream URLs, or --camera INDEX"),
    (["--camera", "-1"], "argument --camera: expected an integer >= 0"),
    (["--camera", "0", "--max-frames", "0"], "argument --max-frames: expected an integer >= 1"),
    (["--camera", "0", "--duration", "0"], "argument --duration: expected a finite number > 0"),
    (["--camera", "0", "--json", "--jsonl"], "--json and --jsonl cannot both write to stdout"),
])
def test_live_options_are_checked(argv, message, capsys):
    code, err = run(["predict", *argv, "--allow-random"], capsys)
    assert code == 2 and err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("threaded", [True, False], ids=["thread", "inline"])
def test_ahead_hands_on_errors_and_closes_its_source(threaded):
    from poster_fast.inference.ahead import ahead

    def failing():
        yield 1
        yield 2
        raise OSError("disk gone")
    got = []
    with pytest.raises(OSError, match="disk gone"):
        got.extend(ahead(failing(), depth=1, threaded=threaded))
    assert got == [1, 2]

    closed = threading.Event()
    where = set()

    def endless():
        try:
            k = 0
            while True:
                where.add(threading.current_thread().name)
                yield k
                k += 1
        finally:
            closed.set()
    prepared = ahead(endless(), depth=2, threaded=threaded)
    got = []
    for k in prepared:
        got.append(k)
        if k == 5:
            break
    prepared.close()
    assert got == [0, 1, 2, 3, 4, 5] and closed.wait(5)
    assert where == {"poster-fast-ahead" if threaded else threading.current_thread().name}
