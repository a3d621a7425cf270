"""``privacy-filter demo``: show what the product does, offline, on a fresh machine.

It needs no video from anywhere: scikit-image's wheel ships ``astronaut.png`` (a real
photo of a person, public domain, NASA).  The person is cut out with the default model
itself and composed twice, at two sizes, walking across a textured room for 4 s, with a
tone as the audio track.  Then both presets run on that clip through the same
``process`` pipeline a user calls (cctv with its person detector and motion layer, pulled and
converted on first use), and one picture puts a frame of the original next to the two results.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from privacy_filter.errors import UserError

log = logging.getLogger(__name__)

SIZE = (640, 360)
FPS = 25
SECONDS = 4
DEFAULT_OUT = "privacy-filter-demo"


def astronaut_cutout(segmenter: Any) -> tuple[np.ndarray, np.ndarray]:
    """(BGR image, alpha 0..1) of the person in scikit-image's astronaut photo."""
    try:
        from skimage import data
    except ImportError as exc:
        raise UserError("the demo needs scikit-image for its sample photo: pip install 'privacy-filter[demo]'") from exc
    import cv2

    rgb = data.astronaut()
    prob = segmenter.infer_rgb([rgb], order="rgb")[0]
    prob = cv2.resize(prob, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.GaussianBlur((prob >= 0.5).astype(np.float32), (0, 0), 1.5)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), alpha


def background(width: int, height: int) -> np.ndarray:
    """A room: graded wall with a brick texture, a wooden floor, a window (BGR)."""
    import cv2

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    wall = np.stack([150 + 40 * xx / width, 170 + 30 * yy / height, 190 - 30 * xx / width], -1)
    bricks = ((yy // 18) % 2 == 0) ^ (((xx + 24 * ((yy // 18) % 2)) // 48) % 2 == 0)
    wall -= 12 * bricks[..., None]
    wall[(yy % 18) < 2] -= 25
    floor_y = int(height * 0.72)
    floor = np.stack([40 + 20 * np.sin(xx / 7.0), 80 + 25 * np.sin(xx / 7.0), 120 + 30 * np.sin(xx / 7.0)], -1)
    img = np.where((yy >= floor_y)[..., None], floor, wall)
    img = np.clip(img, 0, 255).astype(np.uint8)
    cv2.rectangle(img, (int(width * 0.06), int(height * 0.12)), (int(width * 0.26), int(height * 0.45)), (235, 215, 170), -1)
    cv2.rectangle(img, (int(width * 0.06), int(height * 0.12)), (int(width * 0.26), int(height * 0.45)), (60, 60, 60), 3)
    return img


def paste(canvas: np.ndarray, img: np.ndarray, alpha: np.ndarray, x: int, y: int) -> None:
    """Alpha-blend ``img`` at (x, y), clipped to the canvas."""
    h, w = alpha.shape
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, canvas.shape[1]), min(y + h, canvas.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x, None]
    region = canvas[y0:y1, x0:x1].astype(np.float32)
    canvas[y0:y1, x0:x1] = (region * (1 - a) + img[y0 - y : y1 - y, x0 - x : x1 - x] * a).astype(np.uint8)


def make_clip(path: Path, segmenter: Any) -> int:
    """Write the demo clip (H.264 + AAC tone); returns its frame count."""
    import av
    import cv2

    person, alpha = astronaut_cutout(segmenter)
    w, h = SIZE
    bg = background(w, h)
    walkers = []
    for height_px, direction, y_frac in ((int(h * 0.95), 1, 0.05), (int(h * 0.5), -1, 0.42)):
        scale = height_px / person.shape[0]
        size = (int(person.shape[1] * scale), height_px)
        walkers.append((cv2.resize(person, size, interpolation=cv2.INTER_AREA), cv2.resize(alpha, size), direction, int(h * y_frac)))
    n = FPS * SECONDS
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"preset": "veryfast", "crf": "20"}
        aus = out.add_stream("aac", rate=48000)
        aus.layout = "mono"
        for i in range(n):
            canvas = bg.copy()
            for img, a, direction, top in walkers:
                span = w + img.shape[1]
                x = int(-img.shape[1] + span * i / (n - 1)) if direction > 0 else int(w - span * i / (n - 1))
                bob = int(4 * np.sin(i / 2.0))
                paste(canvas, img, a, x, top + bob)
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(canvas, cv2.COLOR_BGR2YUV_I420), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for p in vs.encode(frame):
                out.mux(p)
        samples = 48000 * SECONDS
        for k in range(0, samples, 1024):
            t = (np.arange(1024) + k) / 48000
            tone = (0.2 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[None, :]
            af = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, k, Fraction(1, 48000)
            for p in aus.encode(af):
                out.mux(p)
        for s in (vs, aus):
            for p in s.encode(None):
                out.mux(p)
    return n


def frame_bgr(path: Path, index: int) -> np.ndarray:
    import av
    import cv2

    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == index:
                return cv2.cvtColor(f.to_ndarray(format="yuv420p"), cv2.COLOR_YUV2BGR_I420)
    raise UserError(f"{path} has fewer than {index + 1} frames")


def before_after(paths: list[tuple[str, Path]], index: int, out: Path) -> None:
    """One PNG: the same frame of each video side by side, labelled."""
    import cv2

    tiles = []
    for label, p in paths:
        img = frame_bgr(p, index)
        cv2.rectangle(img, (0, 0), (img.shape[1], 30), (0, 0, 0), -1)
        cv2.putText(img, label, (10, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(img)
    if not cv2.imwrite(str(out), np.hstack(tiles)):
        raise UserError(f"cannot write {out}")


def run_demo(out_dir: Path, progress: bool = True) -> dict[str, Path]:
    """Make the clip, run both presets, write the picture; returns the files made."""
    from privacy_filter.backends import create_segmenter
    from privacy_filter.config import stream_config
    from privacy_filter.pipeline import plan_from_stream_config, run_process

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the demo folder {out_dir}: {exc}") from exc
    segmenter = create_segmenter()  # pulls and converts the default model once, if needed
    clip = out_dir / "input.mp4"
    n = make_clip(clip, segmenter)
    files = {"input": clip}
    for preset in ("cctv", "video-call"):
        out = out_dir / f"{preset}.mp4"
        # the demo's own folder: a rerun replaces its earlier outputs without a warning
        plan = plan_from_stream_config(stream_config(str(clip), str(out), preset=preset, overrides={"output": {"overwrite": True}}))
        # video-call segments the whole frame with the model already loaded; cctv builds its own
        # cover engine (NanoDet person detector, pulled on first use, plus the motion layer)
        rep = run_process(str(clip), str(out), plan, segmenter=segmenter if preset == "video-call" else None, progress=progress)
        log.info("%s: %d frames, %.1f fps", preset, rep.frames_out, rep.fps)
        files[preset] = out
    picture = out_dir / "before-after.png"
    shown = [("original", clip), ("cctv: person pixelated (one photo, two sizes)", files["cctv"]), ("video-call: room blurred", files["video-call"])]
    before_after(shown, int(n * 0.3), picture)  # a frame where the two walkers do not overlap
    files["picture"] = picture
    return files
