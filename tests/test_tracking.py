"""faces.Tracking, the video detector: which searches each frame gets, and what it finds, on short
synthetic clips (the astronaut's face, about 60 px, moving 3 px a frame on a 320x240 canvas)."""
from __future__ import annotations

import numpy as np
import pytest

from face_images import TrueFace, astronaut, background, matches, paste, scaled
from poster_fast.faces import Tracking, load_detector, yunet

if not yunet.available():
    pytest.skip("this OpenCV has no FaceDetectorYN", allow_module_level=True)

PHOTO, TRUE = astronaut()
FACE = PHOTO[20:230, 120:330]  # the face and some hair, shoulders cut
FACE_TRUE = TrueFace(TRUE.cx - 120, TRUE.cy - 20, TRUE.size)


@pytest.fixture(scope="module")
def detector():
    return load_detector()


def frame(i: int, with_face: bool = True):
    """Frame `i`: the face (about 60 px) 3 px further right each frame, or only the canvas."""
    canvas, faces = background(320, 240, seed=5), []
    if with_face:
        image, (face,) = scaled(FACE, [FACE_TRUE], 0.6)
        paste(canvas, faces, image, [face], 60 + 3 * i, 60)
    return canvas, faces


def xywh(found) -> tuple[int, int, int, int]:
    return found.box.x, found.box.y, found.box.w, found.box.h


class Spy:
    """Records, per frame, the searches a Tracking asks of its detector (not the region passes
    that a photo's search makes itself)."""

    def __init__(self, detector, monkeypatch) -> None:
        self.calls: list[str] = []
        self.searching = False
        search, region = detector.search, detector.region

        def spied_search(image, passes, refine=True):
            self.calls.append("photo" if refine else "first pass")
            self.searching = True
            try:
                return search(image, passes, refine)
            finally:
                self.searching = False

        def spied_region(image, face, degrees):
            if not self.searching:
                self.calls.append("region")
            return region(image, face, degrees)

        monkeypatch.setattr(detector, "search", spied_search)
        monkeypatch.setattr(detector, "region", spied_region)

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


def test_key_frames_get_a_photos_search_the_others_a_region_pass_and_a_first_pass_every_scan(detector,
                                                                                              monkeypatch):
    tracking = Tracking(detector, key_every=6, scan_every=3)
    spy = Spy(detector, monkeypatch)
    seen = []
    for i in range(8):
        image, (true,) = frame(i)
        found = tracking(image)
        assert len(found) == 1 and matches(xywh(found[0]), true), (i, found)
        seen.append(spy.take())
        assert tracking.searched == {"photo": "key frame", "region": "region only"}.get(
            "".join(seen[-1]), "scan frame"), (i, seen[-1], tracking.searched)
    assert seen[0] == seen[6] == ["photo"]
    assert seen[1] == seen[2] == seen[4] == seen[5] == seen[7] == ["region"]
    assert seen[3] == ["region", "first pass"]


def test_a_face_appearing_between_key_frames_is_found_at_once_and_a_lost_one_is_dropped(detector, monkeypatch):
    """While no face is followed every frame gets the first pass, so a face is found the frame it
    appears; a face that leaves is no longer reported."""
    tracking = Tracking(detector, key_every=30, scan_every=3)
    spy = Spy(detector, monkeypatch)
    assert tracking(frame(0, with_face=False)[0]) == [] and spy.take() == ["photo"]
    assert tracking(frame(1, with_face=False)[0]) == [] and spy.take() == ["first pass"]
    image, (true,) = frame(2)
    found = tracking(image)
    assert spy.take() == ["first pass"] and len(found) == 1 and matches(xywh(found[0]), true)
    for i, searches in ((3, ["region", "first pass"]), (4, ["region"])):
        image, (true,) = frame(i)
        found = tracking(image)
        assert spy.take() == searches and len(found) == 1 and matches(xywh(found[0]), true)
    assert tracking(frame(5, with_face=False)[0]) == []
    assert spy.take() == ["region", "first pass"]


@pytest.mark.parametrize("key_every, scan_every", [(0, 3), (15, 0)])
def test_tracking_options_are_checked(detector, key_every, scan_every):
    with pytest.raises(ValueError, match="key_every and scan_every: expected at least 1"):
        Tracking(detector, key_every=key_every, scan_every=scan_every)
