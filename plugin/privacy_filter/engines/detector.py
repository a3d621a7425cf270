"""Person detection: the ``Detector`` protocol, the backend-neutral ``DetectorEngine`` (NanoDet-g,
GFL head) and its ONNX Runtime backend; the TensorRT backend is ``gpu.tensorrt.detector``.

Why a detector beside segmentation: the webcam segmentation model finds people within about
2 m of the lens and nobody in CCTV footage; a COCO detector finds pedestrians at CCTV scale.

Input is taken from the decoder's I420 planes without a full-resolution RGB picture: the Y, U
and V planes are resized to the detector size first (area filter), and only that small picture
is converted to BGR and normalised.  At 1080p this avoids a 6 MB colour conversion per frame.

Frames are grouped by detector input size and each group runs as one batch, so frames of
several streams share one ONNX Runtime call.  Frames much larger than the detector input (4K)
are also cut into overlapping tiles, each run at the detector size, plus the whole frame (so big
people are never only seen cut in pieces); the boxes of all parts are merged by NMS.

Boxes are ``(N, 5)`` float32 rows ``x0, y0, x1, y1, score`` in the frame's stored pixels.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, runtime_checkable

import cv2
import numpy as np
from typing_extensions import Unpack

from privacy_filter.errors import ConfigError, ModelError
from privacy_filter.frames import YuvFrame
from privacy_filter.models.registry import ResolvedDetector
from privacy_filter.models.specs import DetectorSpec

log = logging.getLogger(__name__)

LongSide = int | Literal["auto"]
Tiles = Literal["auto", "on", "off"]
#: ``tiles="auto"`` tiles frames whose long side exceeds this (beyond 1440p): at 1080p the
#: whole frame at long side 640 finds people ~60 px tall, and tiles would cost several runs.
TILE_AUTO_ABOVE = 2560
#: Default tile side in source pixels, as a multiple of the detector long side: tiles are run at
#: half their resolution, which keeps far people of a 4K frame at the size 1080p gives them.
TILE_FACTOR = 2
MAX_BATCH = 8
#: ONNX Runtime's CPU provider: pictures per run.  Frames of several streams (or tiles) still
#: come to the engine together, but on the CPU a batch of two NanoDet pictures took 155-158 ms of
#: CPU against 158-164 for two runs of one (640x384, two threads), while the batch's activations
#: stay in ONNX Runtime's arena for the rest of the run: +16 MB peak RSS on the 1080p cctv clip
#: when the first call of a file ran its first two frames together.
CPU_MAX_BATCH = 1

EMPTY = np.zeros((0, 5), np.float32)


@runtime_checkable
class Detector(Protocol):
    """Finds people in frames; what the stage calls for ``detector:`` other than ``none``."""

    spec: DetectorSpec

    def detect_yuv(self, frames: list[YuvFrame]) -> list[np.ndarray]:
        """Per frame, person boxes (N, 5) float32 ``x0, y0, x1, y1, score`` in frame pixels."""
        ...


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class InputGeometry:
    """How a picture maps onto the detector input: resized content size and padded input size."""

    src_w: int
    src_h: int
    w: int  # resized content width (even, so chroma is exactly half)
    h: int
    pad_w: int  # input width: w rounded up to the spec's pad multiple
    pad_h: int

    @property
    def scale_x(self) -> float:
        """Source pixels per input pixel."""
        return self.src_w / self.w

    @property
    def scale_y(self) -> float:
        return self.src_h / self.h


def auto_long_side(src_w: int, src_h: int, spec: DetectorSpec) -> int:
    """The source's long side rounded up to the pad multiple, clamped to the spec's range.

    Upscaling a small source far beyond its own size made detection worse (PETS 480x360: worse
    at 640 than at 512), while large sources need the most input pixels the budget allows.
    """
    m = spec.pad_multiple
    return int(min(spec.long_side_max, max(spec.long_side_min, -(-max(src_w, src_h) // m) * m)))


def long_side_for(src_w: int, src_h: int, spec: DetectorSpec, long_side: LongSide) -> int:
    return auto_long_side(src_w, src_h, spec) if long_side == "auto" else int(long_side)


def input_geometry(src_w: int, src_h: int, long_side: int, pad_multiple: int = 32) -> InputGeometry:
    """Long side → ``long_side``, aspect kept, even sizes, then padded to a multiple (not stretched:
    the detector was trained on people of natural proportions)."""
    s = long_side / float(max(src_w, src_h))
    w = max(2, int(round(src_w * s / 2.0)) * 2)
    h = max(2, int(round(src_h * s / 2.0)) * 2)
    return InputGeometry(src_w, src_h, w, h, -(-w // pad_multiple) * pad_multiple, -(-h // pad_multiple) * pad_multiple)


def tile_rects(src_w: int, src_h: int, tile: int, overlap: float = 0.2) -> list[tuple[int, int, int, int]]:
    """Equal-size overlapping tiles ``(x0, y0, x1, y1)`` covering the frame, even origins (I420).

    Equal sizes let all tiles of a frame run as one batch.
    """
    tw, th = min(tile, src_w), min(tile, src_h)

    def starts(n: int, t: int) -> list[int]:
        if n <= t:
            return [0]
        k = int(np.ceil((n - t) / (t * (1.0 - overlap)))) + 1
        return [min(n - t, int(round(i * (n - t) / (k - 1))) // 2 * 2) for i in range(k)]

    return [(x, y, x + tw, y + th) for y in starts(src_h, th) for x in starts(src_w, tw)]


# --------------------------------------------------------------------------- preprocessing


def _normalise_into(bgr: np.ndarray, out: np.ndarray, mean: np.ndarray, inv_std: np.ndarray) -> None:
    """``(bgr - mean) / std`` as CHW into the top-left of ``out`` (3, pad_h, pad_w); the pad stays 0
    (the mean colour after normalisation, neutral for the detector).

    Plane by plane with OpenCV (split, then subtract and scale into float32): the same float32
    values as NumPy's ``(x - mean) * inv_std`` on the interleaved picture and its transpose, in
    about a seventh of the time (measured at 640x360: ~0.5 vs ~3.8 ms, once per detector run).
    """
    h, w = bgr.shape[:2]
    m, s = np.asarray(mean, np.float64).reshape(-1), np.asarray(inv_std, np.float64).reshape(-1)
    for c, plane in enumerate(cv2.split(np.ascontiguousarray(bgr))):
        # a Python float is a cv::Scalar for OpenCV; its stubs know only arrays there
        out[c, :h, :w] = cv2.multiply(cv2.subtract(plane, float(m[c]), dtype=cv2.CV_32F), float(s[c]))  # type: ignore[call-overload]


def planes_to_bgr(y: np.ndarray, u: np.ndarray, v: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize the I420 planes to ``w``x``h`` (even), then convert that small picture to BGR."""
    interp = cv2.INTER_AREA if w < y.shape[1] else cv2.INTER_LINEAR
    buf = np.empty((h * 3 // 2, w), np.uint8)
    cw, ch = w // 2, h // 2
    flat = buf.reshape(-1)
    cv2.resize(y, (w, h), dst=buf[:h], interpolation=interp)
    flat[w * h : w * h + cw * ch] = cv2.resize(u, (cw, ch), interpolation=interp).reshape(-1)
    flat[w * h + cw * ch :] = cv2.resize(v, (cw, ch), interpolation=interp).reshape(-1)
    return cv2.cvtColor(buf, cv2.COLOR_YUV2BGR_I420)


def preprocess_planes(planes: tuple[np.ndarray, np.ndarray, np.ndarray], geo: InputGeometry, spec: DetectorSpec, out: np.ndarray) -> None:
    """One I420 picture into ``out`` (3, pad_h, pad_w), in the spec's colour order."""
    bgr = planes_to_bgr(*planes, geo.w, geo.h)
    mean, inv_std = spec.normalisation_arrays()
    _normalise_into(bgr if spec.color == "bgr" else bgr[:, :, ::-1], out, mean, inv_std)


def preprocess_bgr(image: np.ndarray, geo: InputGeometry, spec: DetectorSpec, out: np.ndarray) -> None:
    """One BGR still into ``out`` (3, pad_h, pad_w)."""
    interp = cv2.INTER_AREA if geo.w < image.shape[1] else cv2.INTER_LINEAR
    small = cv2.resize(image, (geo.w, geo.h), interpolation=interp)
    mean, inv_std = spec.normalisation_arrays()
    _normalise_into(small if spec.color == "bgr" else small[:, :, ::-1], out, mean, inv_std)


# --------------------------------------------------------------------------- decoding


def _centres(pad_w: int, pad_h: int, stride: int) -> np.ndarray:
    """Cell centres ``((col + .5) s, (row + .5) s)``, row-major like the head's flattening."""
    gh, gw = pad_h // stride, pad_w // stride
    cols, rows = np.meshgrid(np.arange(gw, dtype=np.float32), np.arange(gh, dtype=np.float32))
    return np.stack([(cols.ravel() + 0.5) * stride, (rows.ravel() + 0.5) * stride], axis=1)


def gfl_distances(reg: np.ndarray, bins: int) -> np.ndarray:
    """GFL integral: softmax over ``bins`` per side, then its expectation (stride units). [K, 4·bins] → [K, 4]."""
    r = reg.reshape(-1, 4, bins).astype(np.float32)
    r = np.exp(r - r.max(axis=2, keepdims=True))
    r /= r.sum(axis=2, keepdims=True)
    return r @ np.arange(bins, dtype=np.float32)


def nms(boxes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first."""
    order = np.argsort(-boxes[:, 4], kind="stable")
    x0, y0, x1, y1 = (boxes[:, i] for i in range(4))
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = iw * ih
        order = rest[inter / (area[i] + area[rest] - inter + 1e-9) <= iou]
    return np.asarray(keep, np.int64)


def decode_boxes(scores: Sequence[np.ndarray], regs: Sequence[np.ndarray], geo: InputGeometry, spec: DetectorSpec, threshold: float) -> np.ndarray:
    """One picture's head outputs → person boxes (K, 5) in source pixels, after NMS.

    Only cells whose person score passes ``threshold`` are decoded, which keeps this cheap.
    """
    parts = []
    for s, r, stride in zip(scores, regs, spec.strides, strict=True):
        cells = (geo.pad_h // stride) * (geo.pad_w // stride)
        if s.shape[0] != cells or r.shape[0] != cells:
            raise ModelError(f"detector output at stride {stride} has {s.shape[0]} cells, expected {cells} for a {geo.pad_w}x{geo.pad_h} input")
        sc = s[:, spec.person_index]
        keep = np.flatnonzero(sc >= threshold)
        if keep.size == 0:
            continue
        c = _centres(geo.pad_w, geo.pad_h, stride)[keep]
        d = gfl_distances(r[keep], spec.reg_bins) * stride
        parts.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3], sc[keep]], 1))
    if not parts:
        return EMPTY.copy()
    b = np.concatenate(parts).astype(np.float32)
    b = b[nms(b, spec.nms_iou)]
    b[:, [0, 2]] = np.clip(b[:, [0, 2]] * geo.scale_x, 0, geo.src_w)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]] * geo.scale_y, 0, geo.src_h)
    return b


# --------------------------------------------------------------------------- engine


@dataclass
class _Job:
    """One detector input: a frame (or a tile of it) at one geometry, with its offset in the frame."""

    index: int  # frame index in the call
    geo: InputGeometry
    x0: int = 0
    y0: int = 0
    planes: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    image: np.ndarray | None = None


class DetectorOptions(TypedDict, total=False):
    """How a ``DetectorEngine`` plans and filters its runs; every backend takes the same (see ``DetectorEngine``)."""

    long_side: LongSide
    score_threshold: float | None
    tiles: Tiles
    tile_size: int | None
    tile_overlap: float
    max_batch: int


class DetectorEngine:
    """Everything a detector does except running its network: planning (long side, tiles),
    preprocessing from the I420 planes, batching by input size, GFL decoding and NMS.

    Backends differ only in ``run`` (one NCHW batch in, the spec's outputs out): ONNX Runtime
    (``OrtDetector``) and a TensorRT engine (``privacy_filter.gpu.tensorrt.detector``) share the
    rest, so both find the same boxes for the same outputs.

    ``long_side``: ``"auto"`` (per frame, ``auto_long_side``) or an int (multiple of the spec's
    pad multiple, e.g. 320/416/512/640).  ``score_threshold``: None = the spec's (0.2 for nanodet).
    ``tiles``: ``"auto"`` tiles frames whose long side exceeds ``TILE_AUTO_ABOVE``; ``"on"``
    tiles any frame larger than one tile; ``"off"`` never.  ``tile_size``: tile side in source
    pixels (default ``TILE_FACTOR`` x the long side).
    """

    def __init__(
        self,
        spec: DetectorSpec,
        *,
        long_side: LongSide = "auto",
        score_threshold: float | None = None,
        tiles: Tiles = "auto",
        tile_size: int | None = None,
        tile_overlap: float = 0.2,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self.spec = spec
        if long_side != "auto" and (not isinstance(long_side, int) or long_side < self.spec.pad_multiple):
            raise ConfigError(f"detector long_side: {long_side!r} is neither 'auto' nor an int >= {self.spec.pad_multiple}")
        if tiles not in ("auto", "on", "off"):
            raise ConfigError(f"detector tiles: {tiles!r}; allowed: auto, on, off")
        threshold = self.spec.score_threshold if score_threshold is None else float(score_threshold)
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"detector score_threshold: {threshold} is not in (0, 1)")
        self.long_side: LongSide = long_side
        self.score_threshold = threshold
        self.tiles: Tiles = tiles
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.max_batch = max(1, int(max_batch))
        self._local = threading.local()  # per thread: the reused input batch (_batch_buffer)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The raw outputs (scores per stride, then box distributions per stride) of one NCHW batch."""
        raise NotImplementedError

    def _batch_buffer(self, shape: tuple[int, int, int, int]) -> np.ndarray:
        """A zeroed input batch of ``shape``: this thread's last one, refilled, when the shape is the same.

        Why: a 640x384 batch is 2.9 MB, and a new one per run is a fresh mapping whose pages are
        faulted in again each time when ``low_memory`` maps large blocks on their own
        (``pipeline.bound_heap``).  Per thread, so two threads never fill one buffer.
        """
        buf: np.ndarray | None = getattr(self._local, "batch", None)
        if buf is None or buf.shape != shape:
            buf = self._local.batch = np.zeros(shape, np.float32)
        else:
            buf.fill(0.0)
        return buf

    # -- planning ---------------------------------------------------------------------------
    def _parts(self, w: int, h: int) -> tuple[int, list[tuple[int, int, int, int]]]:
        """(long side, tile rectangles; empty when the whole frame alone is run)."""
        L = long_side_for(w, h, self.spec, self.long_side)
        tile = self.tile_size or TILE_FACTOR * L
        wanted = self.tiles == "on" or (self.tiles == "auto" and max(w, h) > TILE_AUTO_ABOVE)
        if not wanted or max(w, h) <= tile:
            return L, []
        return L, tile_rects(w, h, tile, self.tile_overlap)

    def _jobs_yuv(self, frames: list[YuvFrame]) -> list[_Job]:
        jobs: list[_Job] = []
        m = self.spec.pad_multiple
        for i, f in enumerate(frames):
            L, rects = self._parts(f.width, f.height)
            jobs.append(_Job(i, input_geometry(f.width, f.height, L, m), planes=f.planes))
            for x0, y0, x1, y1 in rects:
                planes = (f.y[y0:y1, x0:x1], f.u[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2], f.v[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2])
                jobs.append(_Job(i, input_geometry(x1 - x0, y1 - y0, L, m), x0, y0, planes=planes))
        return jobs

    def _jobs_bgr(self, images: list[np.ndarray]) -> list[_Job]:
        jobs: list[_Job] = []
        m = self.spec.pad_multiple
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            L, rects = self._parts(w, h)
            jobs.append(_Job(i, input_geometry(w, h, L, m), image=im))
            for x0, y0, x1, y1 in rects:
                jobs.append(_Job(i, input_geometry(x1 - x0, y1 - y0, L, m), x0, y0, image=im[y0:y1, x0:x1]))
        return jobs

    # -- running ------------------------------------------------------------------------------
    def _run(self, jobs: list[_Job], count: int) -> list[np.ndarray]:
        """Batch the jobs by input size, run, decode, shift and merge per frame."""
        groups: dict[tuple[int, int], list[_Job]] = defaultdict(list)
        for job in jobs:
            groups[(job.geo.pad_h, job.geo.pad_w)].append(job)
        found: list[list[np.ndarray]] = [[] for _ in range(count)]
        for (ph, pw), group in groups.items():
            for start in range(0, len(group), self.max_batch):
                chunk = group[start : start + self.max_batch]
                batch = self._batch_buffer((len(chunk), 3, ph, pw))
                for k, job in enumerate(chunk):
                    if job.planes is not None:
                        preprocess_planes(job.planes, job.geo, self.spec, batch[k])
                    elif job.image is not None:
                        preprocess_bgr(job.image, job.geo, self.spec, batch[k])
                outs = self.run(batch)
                n = len(self.spec.strides)
                for k, job in enumerate(chunk):
                    boxes = decode_boxes([o[k] for o in outs[:n]], [o[k] for o in outs[n:]], job.geo, self.spec, self.score_threshold)
                    if job.x0 or job.y0:
                        boxes[:, [0, 2]] += job.x0
                        boxes[:, [1, 3]] += job.y0
                    found[job.index].append(boxes)
                del outs  # ONNX Runtime's outputs live in its arena: freed before the next run, which then reuses them
        result = []
        for parts in found:
            boxes = np.concatenate(parts) if parts else EMPTY.copy()
            if len(parts) > 1 and len(boxes):
                boxes = boxes[nms(boxes, self.spec.nms_iou)]
            result.append(boxes.astype(np.float32, copy=False))
        return result

    def detect_yuv(self, frames: list[YuvFrame]) -> list[np.ndarray]:
        """Per frame, person boxes (N, 5) ``x0, y0, x1, y1, score`` in frame pixels; one batched run
        per input size for all frames given (several streams' frames may be mixed)."""
        return self._run(self._jobs_yuv(frames), len(frames)) if frames else []

    def detect_bgr(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Per BGR still (H, W, 3) uint8, person boxes (N, 5) in image pixels."""
        return self._run(self._jobs_bgr(images), len(images)) if images else []


class OrtDetector(DetectorEngine):
    """A resolved detector run by ONNX Runtime (CPU, or its CUDA/TensorRT EPs when asked for).

    Parameters as ``DetectorEngine``, plus ``device`` and ``threads`` (ONNX Runtime intra-op threads).
    """

    def __init__(self, model: ResolvedDetector, device: str = "cpu", *, threads: int | None = None, **options: Unpack[DetectorOptions]) -> None:
        from privacy_filter.engines.onnxruntime import make_session

        super().__init__(model.spec, **options)
        self.onnx_path = model.onnx_path
        self.session = make_session(model.onnx_path, device, threads, mem_pattern=False)
        self.providers = self.session.get_providers()
        if self.providers[0] == "CPUExecutionProvider" and "max_batch" not in options:
            self.max_batch = CPU_MAX_BATCH
        self._outputs = [*self.spec.score_outputs, *self.spec.box_outputs]
        batch = self.session.get_inputs()[0].shape[0]
        if isinstance(batch, int) and batch > 0:
            self.max_batch = min(self.max_batch, batch)  # a model with a fixed batch (the reference: 1)
        log.info(
            "detector %s (%s) on %s, long side %s, threshold %.2f, tiles %s", self.spec.name, model.onnx_path, self.providers[0], self.long_side, self.score_threshold, self.tiles
        )

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return list(self.session.run(self._outputs, {self.spec.input_name: batch}))
