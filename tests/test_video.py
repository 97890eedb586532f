"""`poster-fast predict` on video: a short video written here from a real photo (scikit-image's
astronaut, twice side by side so that each frame has two faces, shifted a little each frame),
read with OpenCV; the timeline, --every, faces batched across frames, the outputs, the annotated
video, and videos that cannot be read."""
from __future__ import annotations

import csv
import json
import sys
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from command_utils import BASE, FakeClassifier, place, recognizer, run, work  # noqa: F401  (fixtures)
from poster_fast.commands.cli import main
from poster_fast.faces import load_detector
from poster_fast.inference import outputs
from poster_fast.inference.crops import PhotoResult
from poster_fast.inference.predict import predict_files
from poster_fast.inference.video import NEEDS_OPENCV, VideoResult

cv2 = pytest.importorskip("cv2")
skdata = pytest.importorskip("skimage.data")

FRAMES, FPS, SHIFT = 10, 8.0, 4  # the face moves SHIFT pixels right per frame
FACE_CENTRE = (222, 115)  # the astronaut's face in the left half (tests/test_predict.py)


def write_video(path, frames: list[np.ndarray], fps: float = FPS) -> str:
    """`frames` (RGB) as a video, with the first codec of mp4v / MJPG this OpenCV can write."""
    height, width = frames[0].shape[:2]
    for fourcc in ("mp4v", "MJPG"):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
        if writer.isOpened():
            for frame in frames:
                writer.write(np.ascontiguousarray(frame[..., ::-1]))
            writer.release()
            return fourcc
    pytest.skip("this OpenCV can write neither mp4v nor MJPG videos")


def read_video(path) -> tuple[list[np.ndarray], float]:
    """Every frame (RGB) as OpenCV decodes it, and the frame rate."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("video")
    face = skdata.astronaut()
    two = np.concatenate([face, face[:, ::-1]], axis=1)  # 1024x512, two faces
    write_video(d / "clip.mp4", [np.roll(two, SHIFT * i, axis=1) for i in range(FRAMES)])
    Image.fromarray(face).save(d / "astronaut.png")
    (d / "corrupt.mp4").write_bytes(b"this is not a video\n" * 50)
    return d


@pytest.fixture(scope="module")
def classifier():
    from poster_fast.inference.classifier import random_classifier

    torch.manual_seed(0)
    return random_classifier(device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def detector():
    return load_detector()


@pytest.fixture(scope="module")
def timeline(clip, classifier, detector):
    """The video classified frame by frame, batch 16 (larger than a frame's faces)."""
    (video,) = predict_files([clip / "clip.mp4"], recognizer(classifier, detector, batch_size=16), progress=False)
    return video


def probabilities(result) -> list[list[float]]:
    return [list(f.probs.values()) for f in result.faces]


def test_faces_on_every_frame_and_the_timeline(timeline):
    assert isinstance(timeline, VideoResult) and timeline.error is None
    assert timeline.fps == pytest.approx(FPS) and timeline.frames_read == FRAMES
    assert timeline.size == (1024, 512)
    assert [f.index for f in timeline.frames] == list(range(FRAMES))
    assert [f.time for f in timeline.frames] == pytest.approx([i / FPS for i in range(FRAMES)])
    for frame in timeline.frames:
        assert frame.error is None and frame.classified == len(frame.faces) >= 2
        x, y = FACE_CENTRE[0] + SHIFT * frame.index, FACE_CENTRE[1]
        assert any(b.x < x < b.x + b.w and b.y < y < b.y + b.h for b in (f.box for f in frame.faces)), frame


@pytest.mark.parametrize("every", [3, 4])
def test_every_n_picks_frames_0_n_2n(clip, every):
    (video,) = predict_files([clip / "clip.mp4"], recognizer(FakeClassifier()), every=every, progress=False)
    assert [f.index for f in video.frames] == list(range(0, FRAMES, every))
    assert [f.time for f in video.frames] == pytest.approx([i / FPS for i in range(0, FRAMES, every)])
    assert video.frames_read == FRAMES and video.every == every


def test_crops_batch_across_frames_with_the_same_results(clip, classifier, detector, timeline, monkeypatch):
    """Batch 1 (smaller than a frame's faces) and batch 3 (its first batch holds the faces of
    frame 0 and of frame 3) give the faces and probabilities of batch 16 (every 3rd frame, to be
    quick)."""
    sizes: list[int] = []
    real = classifier.probabilities

    def record(batch):
        sizes.append(len(batch))
        return real(batch)
    monkeypatch.setattr(classifier, "probabilities", record)
    (reference,) = predict_files([clip / "clip.mp4"], recognizer(classifier, detector, batch_size=16), every=3,
                                 progress=False)
    sampled = reference.frames
    assert [f.index for f in sampled] == [f.index for f in timeline.frames[::3]]
    for batch_size in (1, 3):
        sizes.clear()
        (video,) = predict_files([clip / "clip.mp4"], recognizer(classifier, detector, batch_size=batch_size),
                                 every=3, progress=False)
        assert sum(sizes) == sum(len(f.faces) for f in sampled) and max(sizes) == batch_size
        assert sizes[0] == batch_size and (batch_size == 1 or len(sampled[0].faces) < batch_size)
        for frame, expected in zip(video.frames, sampled, strict=True):
            assert [f.box for f in frame.faces] == [f.box for f in expected.faces]
            np.testing.assert_allclose(probabilities(frame), probabilities(expected), rtol=0, atol=2e-6)


def test_frame_probabilities_match_the_frame_classified_as_a_photo(clip, classifier, detector, timeline, tmp_path):
    """Each frame, as OpenCV decodes it, saved losslessly and classified as a photo: the first
    frame (a key frame: the whole search of a photo) gives the same faces and probabilities; the
    others (a video's faces are followed from frame to frame, faces.Tracking) the same faces, their
    boxes within a tenth of their size."""
    frames, _ = read_video(clip / "clip.mp4")
    files = []
    for i in (0, 3, 9):
        files.append(tmp_path / f"frame{i}.png")
        Image.fromarray(frames[i]).save(files[-1])
    photos = predict_files(files, recognizer(classifier, detector, batch_size=16), progress=False)
    for i, photo in zip((0, 3, 9), photos):
        assert isinstance(photo, PhotoResult) and photo.error is None
        frame = timeline.frames[i]
        assert len(photo.faces) == len(frame.faces)
        for a, b in zip(photo.faces, frame.faces):  # key frame: the same box; others: the same face
            shift = np.subtract([a.box.x, a.box.y, a.box.w, a.box.h], [b.box.x, b.box.y, b.box.w, b.box.h])
            assert np.abs(shift).max() <= (0 if i == 0 else 0.1 * max(a.box.w, a.box.h)), (i, a.box, b.box)
        if i == 0:
            np.testing.assert_allclose(probabilities(frame), probabilities(photo), rtol=0, atol=2e-6)


def test_command_outputs_annotated_video_and_an_unreadable_video(clip, tmp_path, capsys):
    """Photos and videos mixed; the corrupt video is reported and the rest goes on; the JSON is
    valid, the CSV has one row per face per frame, the annotated video has a frame per processed
    frame, the input's size, and is never written over the input (annotating into its folder)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("clip.mp4", "corrupt.mp4", "astronaut.png"):
        (folder / name).write_bytes((clip / name).read_bytes())
    before = {p: p.read_bytes() for p in folder.iterdir()}
    out_json, out_csv = tmp_path / "o.json", tmp_path / "o.csv"
    code = main(["predict", str(folder / "corrupt.mp4"), str(folder / "clip.mp4"), str(folder / "astronaut.png"),
                 "--allow-random", "--every", "3", "--batch-size", "4", "--quiet", "--device", "cpu",
                 "--json", str(out_json), "--csv", str(out_csv), "--annotate", str(folder)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert {p: p.read_bytes() for p in before} == before
    doc = json.loads(out_json.read_text(), parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    corrupt, video, photo = doc["results"]
    assert "cannot open video" in corrupt["error"] and corrupt["frames"] == []
    assert photo["error"] is None and len(photo["faces"]) == 1 and "frames" not in photo
    assert video["error"] is None and video["video"]["every"] == 3 and video["video"]["frames_read"] == FRAMES
    assert [f["frame"] for f in video["frames"]] == [0, 3, 6, 9]
    assert [f["time"] for f in video["frames"]] == pytest.approx([0, 3 / FPS, 6 / FPS, 9 / FPS])
    assert all(len(f["faces"]) >= 2 and f["faces"][0]["label"] for f in video["frames"])
    rows = list(csv.DictReader(out_csv.open()))
    video_rows = [r for r in rows if r["file"].endswith("clip.mp4")]
    assert len(video_rows) == sum(len(f["faces"]) for f in video["frames"])
    assert [(r["frame"], r["face"]) for r in video_rows] == \
        [(str(f["frame"]), str(i)) for f in video["frames"] for i in range(len(f["faces"]))]
    assert [r["frame"] for r in rows if r["file"].endswith("astronaut.png")] == [""]
    assert [r["error"] for r in rows if r["file"].endswith("corrupt.mp4")][0].startswith("cannot open video")
    annotated = folder / "clip_1.mp4"  # clip.mp4 is the input
    frames, fps = read_video(annotated)
    assert len(frames) == 4 and frames[0].shape == (512, 1024, 3) and fps == pytest.approx(FPS / 3, rel=1e-3)
    assert (folder / "astronaut_1.png").is_file()
    assert sorted(p.name for p in folder.iterdir()) == ["astronaut.png", "astronaut_1.png", "clip.mp4",
                                                       "clip_1.mp4", "corrupt.mp4"]
    assert "1 annotated photos" in err and "1 annotated videos" in err


def test_annotated_video_falls_back_to_avi(clip, tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "VIDEO_CODECS", (("XXXX", ".mp4"), ("MJPG", ".avi")))
    annotator = outputs.Annotator(tmp_path)
    predict_files([clip / "clip.mp4"], recognizer(FakeClassifier()), every=5, on_classified=annotator, progress=False)
    annotator.close()
    assert annotator.failed == [] and annotator.videos_written == 1
    frames, _ = read_video(tmp_path / "clip.avi")
    assert len(frames) == 2 and frames[0].shape == (512, 1024, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi"]


def test_corrupt_video_does_not_stop_the_photos(clip, detector):
    results = predict_files([clip / "corrupt.mp4", clip / "astronaut.png"], recognizer(FakeClassifier(), detector),
                            progress=False)
    assert "cannot open video" in results[0].error and results[0].classified == 0
    assert results[1].error is None and results[1].classified == 1


def test_without_opencv_a_video_is_a_per_file_error(clip, monkeypatch):
    """scikit-image instead of OpenCV (the predict extra allows either): photos still work."""
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    detector = load_detector(warn=False)
    assert detector.name.startswith("opencv-lbp")
    video, photo = predict_files([clip / "clip.mp4", clip / "astronaut.png"], recognizer(FakeClassifier(), detector),
                                 progress=False)
    assert video.error == NEEDS_OPENCV and video.frames == []
    assert photo.classified == 1


def test_memory_is_bounded_by_the_crops_not_the_frames(clip, monkeypatch):
    """All frames wait for one batch (batch 100): no decoded frame is alive when it runs."""
    import poster_fast.inference.predict as predict

    alive: list[weakref.ref] = []
    real = predict.read_frames

    class Frame(np.ndarray):  # a decoded frame that can be watched
        pass

    def read_frames(*args, **kwargs):
        for index, at, bgr in real(*args, **kwargs):
            frame = bgr.view(Frame)
            alive.append(weakref.ref(frame))
            del bgr
            yield index, at, frame
    monkeypatch.setattr(predict, "read_frames", read_frames)
    classifier = FakeClassifier(alive=alive)
    (video,) = predict_files([clip / "clip.mp4"], recognizer(classifier, batch_size=100), progress=False)
    assert len(video.frames) == FRAMES and len(alive) == FRAMES and classifier.alive_at_batch == [0]


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5"])
def test_every_must_be_a_positive_integer(value, place, work, capsys):  # noqa: F811
    code, err = run(BASE["predict"] + ["--every", value], capsys)
    assert code == 2 and err.count("\n") == 1 and not work, err
    assert err.startswith(f"poster-fast predict: error: argument --every: expected an integer >= 1, got '{value}'")
    with pytest.raises(ValueError, match="every: expected an integer >= 1"):
        predict_files([], recognizer(FakeClassifier()), every=0, progress=False)


def test_max_frames_and_duration_end_a_file(clip):
    rec = recognizer(FakeClassifier())
    (video,) = predict_files([clip / "clip.mp4"], rec, max_frames=3, progress=False)
    assert [f.index for f in video.frames] == [0, 1, 2]
    (video,) = predict_files([clip / "clip.mp4"], rec, every=2, duration=4.5 / FPS, progress=False)
    assert [f.index for f in video.frames] == [0, 2, 4]  # the video's own time: frame 4 at 4/FPS s
