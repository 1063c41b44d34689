"""Video input for ``alexnet predict`` and ``alexnet explain``: frames sampled every so many seconds (OpenCV, the
``video`` extra)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch

from .errors import UserError

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


def video_frames(path: str | os.PathLike, *, every: float = 1.0) -> Iterator[tuple[float, torch.Tensor]]:
    """Yield ``(time in s, uint8 (3, H, W) RGB frame)`` every ``every`` seconds of a video (OpenCV, optional extra).

    Frames in between are grabbed but not decoded to pixels, so sparse sampling costs little more than demuxing.
    """
    if every <= 0:
        raise UserError(f"every must be a positive number of seconds, got {every!r}")
    try:
        import cv2
    except ImportError:
        raise UserError(f"{path}: reading video needs OpenCV: pip install 'alexnet[video]'") from None
    cap = cv2.VideoCapture(os.fspath(path))
    if not cap.isOpened():
        raise UserError(f"{path}: OpenCV cannot open this video (unsupported codec or not a video file)")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS)
        i, next_t, any_frame = 0, 0.0, False
        while cap.grab():
            t = i / fps if fps > 0 else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000
            i += 1
            if t + 1e-6 < next_t:
                continue
            ok, bgr = cap.retrieve()
            if not ok:
                break
            any_frame = True
            next_t += every * (1 + int((t + 1e-6 - next_t) // every))  # the next multiple of `every` after t
            rgb = np.ascontiguousarray(bgr[:, :, ::-1])
            yield t, torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
        if not any_frame:
            raise UserError(f"{path}: no frame could be decoded from this video")
    finally:
        cap.release()
