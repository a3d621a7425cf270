"""The one segmentation interface every engine implements (docs/architecture.md).

An engine only has to implement ``run`` (a normalised input batch → the raw output tensor named
by its spec).  Preprocessing, batching, tiling and output decoding live here once, so ONNX
Runtime and TensorRT give the same maps for the same input.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import numpy as np

from privacy_filter.engines import outputs, preprocess, tiling
from privacy_filter.frames import YuvFrame, turn
from privacy_filter.models.specs import ModelSpec

Filler = Callable[["tiling.Rect | None", np.ndarray], preprocess.Placement]


class Segmenter(ABC):
    """Person probability maps for batches of frames or images."""

    spec: ModelSpec
    #: Largest batch ``run`` accepts in one call (1 for ONNX files with a fixed batch of 1).
    max_batch: int | None = None
    tiles: tiling.TileSetting = None

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for an input batch already laid out and normalised per ``spec``."""

    # ------------------------------------------------------------------------------------------
    def infer_batch(self, batch: np.ndarray) -> np.ndarray:
        """(N, h, w) float32 probabilities for a prepared batch; splits it when the model's batch is fixed."""
        step = self.max_batch or len(batch)
        raws = [self.run(batch[i : i + step]) for i in range(0, len(batch), step)]
        raw = raws[0] if len(raws) == 1 else np.concatenate(raws)
        return outputs.to_probability(raw, self.spec)

    def infer_yuv(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]:
        """One probability map per frame; maps stretch onto the whole frame.

        A frame with a display rotation is segmented upright (:meth:`YuvFrame.upright`) and its
        map turned back, so that it still lies on the stored picture the effects draw on.
        """
        turns = [f.turns for f in frames]
        maps = self._infer_upright([f.upright() for f in frames])
        return [m if k == 0 else turn(m, -k) for m, k in zip(maps, turns)]

    def _infer_upright(self, frames: Sequence[YuvFrame]) -> list[np.ndarray]:
        def filler(frame: YuvFrame) -> Filler:
            matrix, full = preprocess.frame_colorimetry(frame)

            def fill(rect: tiling.Rect | None, out: np.ndarray) -> preprocess.Placement:
                planes = frame.planes if rect is None else preprocess.crop_yuv(frame, *rect)
                return preprocess.yuv_into(*planes, self.spec, out, matrix, full)

            return fill

        return self._infer([(f.width, f.height, filler(f)) for f in frames])

    def infer_rgb(self, images: Sequence[np.ndarray], order: str = "rgb") -> list[np.ndarray]:
        """Same for packed (H, W, 3) uint8 images in ``order`` ('rgb' or 'bgr')."""
        if order not in ("rgb", "bgr"):
            raise ValueError(f"order must be 'rgb' or 'bgr', got {order!r}")

        def filler(img: np.ndarray) -> Filler:
            def fill(rect: tiling.Rect | None, out: np.ndarray) -> preprocess.Placement:
                crop = img if rect is None else img[rect[1] : rect[3], rect[0] : rect[2]]
                return preprocess.image_into(crop, self.spec, out, order)

            return fill

        return self._infer([(int(im.shape[1]), int(im.shape[0]), filler(im)) for im in images])

    # ------------------------------------------------------------------------------------------
    def _infer(self, sources: list[tuple[int, int, Filler]]) -> list[np.ndarray]:
        if not sources:
            return []
        spec = self.spec
        plans: list[tuple[tiling.TileGrid | None, list[tiling.Rect]]] = []
        jobs: list[tuple[Filler, tiling.Rect | None]] = []
        for w, h, fill in sources:
            grid = tiling.grid_for(self.tiles, w, h, spec.width, spec.height)
            rects = tiling.tile_rects(w, h, grid, spec.width, spec.height) if grid else []
            plans.append((grid, rects))
            if grid is None or grid.whole:
                jobs.append((fill, None))
            jobs.extend((fill, r) for r in rects)
        batch = np.empty((len(jobs), *preprocess.item_shape(spec)), np.float32)
        places = [fill(rect, batch[i]) for i, (fill, rect) in enumerate(jobs)]
        probs = self.infer_batch(batch)
        maps = [place.crop(p) for place, p in zip(places, probs)]

        results: list[np.ndarray] = []
        k = 0
        for (w, h, _), (grid, rects) in zip(sources, plans):
            if grid is None:
                results.append(maps[k])
                k += 1
                continue
            whole = None
            if grid.whole:
                whole = maps[k]
                k += 1
            tiles = maps[k : k + len(rects)]
            k += len(rects)
            results.append(tiling.merge(whole, tiles, rects, w, h, spec.width))
        return results
