"""A wide 1080p view of small people with ground truth, made from PETS 2009 S2L1 (../shared/data).

The shared data has no 1080p CCTV clip with ground truth, so one is made: PETS (480x360, 7 fps)
tiled into 1920x1080, each copy scaled by ``scale`` and started ``STAGGER`` frames after the one
before (so the copies differ), black bars filling the rest.  Its ground truth is PETS's, moved
and scaled with each copy.  At ``scale=1.3334`` (3x2 copies of 640x480) people are 49-128 px
tall in the 1080p frame, as on a wide elevated view; at 1.0 (4x3 copies) 37-96 px.  ``height=720``
scales the composed frames (area filter) and the boxes to 1280x720: the same view from a 720p
camera (``height=480``: 854x480).

Used by the CCTV coverage test and ``benchmarks/cctv_wide_view.py``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import av
import cv2
import numpy as np

W, H = 1920, 1080
STAGGER = 23  # frames between the copies' starts


def i420_planes(frame: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A decoded yuv420p array (h*3/2, w) resized to (w, h) as Y, U, V planes."""
    bgr = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420), (w, h), interpolation=cv2.INTER_CUBIC)
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    q = (h // 2) * (w // 2)
    rest = yuv[h:].reshape(-1)
    return yuv[:h], rest[:q].reshape(h // 2, w // 2), rest[q:].reshape(h // 2, w // 2)


def make_wide_view(pets: Path, video: Path, scale: float, frames: int | None = None, height: int = H) -> Path:
    """Write ``video`` (H.264, crf 18) and ``video.csv`` (``frame,person_id,x,y,w,h,visibility``);
    ``frames``: only the first this many (default: all 300).  Kept when both already exist."""
    gt = video.with_suffix(".csv")
    if video.exists() and gt.exists():
        return video
    with av.open(str(pets / "video.mp4")) as c:
        src = [f.to_ndarray(format="yuv420p") for f in c.decode(video=0)]
    n, (sh, sw) = len(src), (src[0].shape[0] * 2 // 3, src[0].shape[1])
    count = n if frames is None else min(frames, n)
    tw, th = int(sw * scale) // 2 * 2, int(sh * scale) // 2 * 2
    cols, rows = W // tw, H // th
    y0 = (H - rows * th) // 4 * 2  # even: chroma rows line up
    copies = [(k, *divmod(k, cols)) for k in range(cols * rows)]
    zoom = height / H
    with av.open(str(video), "w") as out:
        s = out.add_stream("libx264", rate=7)
        s.width, s.height, s.pix_fmt = int(round(W * zoom)) // 2 * 2, height, "yuv420p"
        s.options = {"crf": "18", "preset": "veryfast", "bf": "0"}
        for t in range(count):
            y = np.full((H, W), 16, np.uint8)
            u = np.full((H // 2, W // 2), 128, np.uint8)
            v = np.full((H // 2, W // 2), 128, np.uint8)
            for k, r, c in copies:
                py, pu, pv = i420_planes(src[(t + STAGGER * k) % n], tw, th)
                top, left = y0 + r * th, c * tw
                y[top : top + th, left : left + tw] = py
                u[top // 2 : (top + th) // 2, left // 2 : (left + tw) // 2] = pu
                v[top // 2 : (top + th) // 2, left // 2 : (left + tw) // 2] = pv
            frame = av.VideoFrame.from_ndarray(np.concatenate([y, u.reshape(-1, W), v.reshape(-1, W)]), format="yuv420p")
            if height != H:
                frame = frame.reformat(width=s.width, height=height, interpolation="AREA")
            for p in s.encode(frame):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    by_frame: dict[int, list[dict[str, str]]] = {}
    with open(pets / "gt.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            by_frame.setdefault(int(row["frame"]), []).append(row)
    with open(gt, "w", newline="") as fh:
        wr = csv.writer(fh)
        wr.writerow(["frame", "person_id", "x", "y", "w", "h", "visibility"])
        for t in range(count):
            for k, r, c in copies:
                for row in by_frame.get((t + STAGGER * k) % n, []):
                    x, yy, bw, bh = (float(row[f]) * tw / sw if f in "xw" else float(row[f]) * th / sh for f in ("x", "y", "w", "h"))
                    box = (x + c * tw, yy + y0 + r * th, bw, bh)
                    wr.writerow([t, 1000 * k + int(row["person_id"]), *(round(b * zoom, 1) for b in box), -1])
    return video
