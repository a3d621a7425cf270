"""TensorRT checks for a user with an NVIDIA GPU and TensorRT 10.x or 11.x (issue 11, build item 7).

    python scripts/tensorrt_check.py --onnx peoplesemsegnet.onnx [--spec peoplesemsegnet-shuffleseg]
                                     [--calib-cache cal.bin] [--detector nanodet [--images DIR]] --out DIR

For each case an engine is built with ``privacy_filter.gpu.tensorrt.build`` and run through
``TensorRTSegmenter``; one JSON report, ``DIR/tensorrt_report.json``:

* fp32 and fp16 engines (TensorRT 11: fp16 only from an fp16-typed ONNX; the fp16 case is skipped);
* static batch (max batch 1) and dynamic batch (1..4, run with 1 and 3 frames);
* the argmax output's dtype as the engine reports it (int32 or int64) and its decoding;
* ``infer_device`` (device chain: preprocess kernel → engine → decode kernel) against ``run()`` /
  ``infer_yuv`` (host path) on the same frames: maps must agree on ≥ 99 % of pixels;
* INT8 from NVIDIA's calibration cache (TensorRT 10 only): a cache that does not cover every tensor
  must fail with TensorRT's "Missing scale" error, reported as such;
* with ``--detector``: the person detector's engine (fp32 and fp16, batch 1..2, sides up to 640)
  through ``TensorRTDetector`` against the ONNX Runtime detector on the same pictures (``--images``,
  photos of people; else synthetic frames): boxes per picture, and the largest corner difference
  of matched boxes (fp32 must match within 2 px, fp16 is reported).

**Not run against real TensorRT in this project**: no machine here has a GPU or TensorRT.
``--fake`` runs it against the fake of the documented API (tests/support/fake_tensorrt.py) and the
host kernel emulator, which checks the script's own plumbing only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "plugin", REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))


def _install_fake(version: str) -> None:
    from support import fake_tensorrt as fake

    sys.modules["tensorrt"] = fake.make_fake_tensorrt(version)
    cp, cpx = fake.make_fake_cupy()
    sys.modules["cupy"], sys.modules["cupyx"] = cp, cpx


def _frames(n: int) -> list[Any]:
    from privacy_filter.frames import YuvFrame

    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        h, w = 360, 640
        y = np.full((h, w), 60, np.uint8)
        y[60:300, 200 + 40 * i : 360 + 40 * i] = rng.integers(120, 220, (240, 160), dtype=np.uint8)
        out.append(YuvFrame(y, np.full((h // 2, w // 2), 128, np.uint8), np.full((h // 2, w // 2), 128, np.uint8)))
    return out


def _runtime(fake: bool) -> Any:
    if fake:
        from support.gpu_emulation import EmulatedRuntime

        return EmulatedRuntime()
    from privacy_filter.gpu.effects import CupyRuntime

    return CupyRuntime()


def _host(rt: Any, a: Any) -> np.ndarray:
    return rt.to_host(a, np.empty(a.shape, a.dtype))


def check_engine(model: Any, out: Path, fake: bool, precision: str, max_batch: int) -> dict[str, Any]:
    from privacy_filter.gpu.effects import DevicePlanes
    from privacy_filter.gpu.tensorrt import build as trt_build
    from privacy_filter.gpu.tensorrt.runtime import TensorRTSegmenter

    path = out / f"{precision}_b{max_batch}.engine"
    t0 = time.perf_counter()
    trt_build.build_engine(model.spec, model.onnx_path, path, trt_build.BuildOptions(max_batch=max_batch, precision=precision))
    seg = TensorRTSegmenter(path)
    res: dict[str, Any] = {"build_s": round(time.perf_counter() - t0, 2), "output_dtype": str(seg.output.dtype), "static_batch": seg.static_batch, "max_batch": seg.max_batch}
    rt = _runtime(fake)
    seg.use_stream(rt.stream)
    for n in sorted({1, min(3, 2 * max_batch + 1)}):
        frames = _frames(n)
        host = seg.infer_yuv(frames)
        dev = []
        with rt.stream_context():
            for f in frames:
                d = DevicePlanes.allocate(rt.xp, f.width, f.height, "nv12")
                d.upload(rt, f.y, f.u, f.v)
                dev.append(d)
        maps = [_host(rt, m if m.flags.c_contiguous else rt.xp.ascontiguousarray(m)) for m in seg.infer_device(dev, rt)]
        agree = min(float(np.mean(a == b)) if a.shape == b.shape else 0.0 for a, b in zip(maps, host))
        res[f"frames_{n}"] = {"infer_device_vs_host_agree": agree, "ok": agree >= 0.99}
    seg.close()
    res["ok"] = all(v["ok"] for k, v in res.items() if k.startswith("frames_"))
    return res


def _pictures(images: str | None) -> list[np.ndarray]:
    import cv2

    if images:
        paths = sorted(p for p in Path(images).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:6]
        pics = [cv2.imread(str(p)) for p in paths]
        return [p for p in pics if p is not None]
    rng = np.random.default_rng(5)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((360, 640), (480, 640), (1080, 1920))]


def check_detector(detector: str, images: str | None, out: Path, precision: str) -> dict[str, Any]:
    """The detector engine against ONNX Runtime on the same pictures (boxes matched greedily by IoU)."""
    from privacy_filter.engines.detector import OrtDetector
    from privacy_filter.engines.finder import iou_matrix
    from privacy_filter.gpu.tensorrt import build as trt_build
    from privacy_filter.gpu.tensorrt.detector import TensorRTDetector
    from privacy_filter.models.registry import resolve_detector

    resolved = resolve_detector(detector)
    path = out / f"detector_{precision}.engine"
    t0 = time.perf_counter()
    trt_build.build_engine(resolved.spec, resolved.onnx_path, path, trt_build.BuildOptions(max_batch=2, precision=precision))
    res: dict[str, Any] = {"build_s": round(time.perf_counter() - t0, 2)}
    pics = _pictures(images)
    engine = TensorRTDetector(path)
    got, want = engine.detect_bgr(pics), OrtDetector(resolved, threads=1).detect_bgr(pics)
    engine.close()
    worst = 0.0
    for g, w in zip(got, want):
        if len(g) and len(w):
            iou = iou_matrix(g[:, :4], w[:, :4])
            j = iou.argmax(axis=1)
            worst = max(worst, float(np.abs(g[:, :4] - w[j, :4]).max()))
    res.update(boxes_tensorrt=[len(g) for g in got], boxes_onnxruntime=[len(w) for w in want], max_corner_diff_px=round(worst, 3), pictures=len(pics))
    same_counts = [len(g) for g in got] == [len(w) for w in want]
    res["ok"] = same_counts and worst <= 2.0 if precision == "fp32" else True  # fp16: reported, not judged
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--onnx", required=True)
    ap.add_argument("--spec", default="peoplesemsegnet-shuffleseg")
    ap.add_argument("--calib-cache", help="NVIDIA's INT8 calibration cache (TensorRT 10)")
    ap.add_argument("--out", default="tensorrt_check_out")
    ap.add_argument("--fake", metavar="VERSION", help="run against the fake TensorRT of the tests (e.g. 10.8.0.43): plumbing only")
    ap.add_argument("--detector", help="also check the person detector's engine: nanodet (pulled on first use) or nanodet:/path.onnx")
    ap.add_argument("--images", help="with --detector: a folder of photos of people to compare boxes on")
    args = ap.parse_args(argv)
    if args.fake:
        _install_fake(args.fake)
    from privacy_filter.gpu.tensorrt import build as trt_build
    from privacy_filter.gpu.tensorrt.loader import import_tensorrt, trt_major
    from privacy_filter.models.registry import resolve_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    trt = import_tensorrt()
    major = trt_major(trt)
    model = resolve_model(f"{args.spec}:{args.onnx}")
    report: dict[str, Any] = {"tensorrt": trt.__version__, "fake": bool(args.fake), "cases": {}}
    for precision in ("fp32", "fp16"):
        for max_batch in (1, 4):
            name = f"{precision} batch 1..{max_batch}"
            if precision == "fp16" and major >= 11:
                report["cases"][name] = {"skipped": "TensorRT 11: fp16 comes from an fp16-typed ONNX (ModelOpt AutoCast)"}
                continue
            try:
                report["cases"][name] = check_engine(model, out, bool(args.fake), precision, max_batch)
            except Exception as exc:  # noqa: BLE001 - reported per case
                report["cases"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if major >= 11:
        report["cases"]["int8 from cache"] = {"skipped": "TensorRT 11 has no calibrator (INT8 comes from Q/DQ nodes)"}
    elif not args.calib_cache:
        report["cases"]["int8 from cache"] = {"skipped": "no --calib-cache given"}
    else:
        try:
            trt_build.build_engine(model.spec, model.onnx_path, out / "int8.engine", trt_build.BuildOptions(precision="int8", calib_cache=Path(args.calib_cache)))
            report["cases"]["int8 from cache"] = {"ok": True, "note": "the cache covered every tensor"}
        except Exception as exc:  # noqa: BLE001
            msg = str(exc)
            report["cases"]["int8 from cache"] = {"ok": "Missing scale" in msg, "error": msg[:2000], "note": "an incomplete cache must fail naming 'Missing scale'"}
    if args.detector:
        for precision in ("fp32", "fp16"):
            name = f"detector {precision}"
            if precision == "fp16" and major >= 11:
                report["cases"][name] = {"skipped": "TensorRT 11: fp16 comes from an fp16-typed ONNX"}
                continue
            try:
                report["cases"][name] = check_detector(args.detector, args.images, out, precision)
            except Exception as exc:  # noqa: BLE001 - reported per case
                report["cases"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    report["ok"] = all(c.get("ok", True) for c in report["cases"].values())
    (out / "tensorrt_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
