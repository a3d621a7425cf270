"""Measure the INT8 activation ranges of the converted NanoDet and write them to the package.

``models.quantize`` makes the CPU's INT8 copy of the detector on a user's machine, where there is
no footage to calibrate on; it takes its activation ranges from
``plugin/privacy_filter/models/nanodet_int8_ranges.json``, which this script writes.  Run it again
when the TF.js converter changes the graph (the table's ``conv_nodes`` then no longer match, and
``precision: auto`` falls back to float, ``int8`` refuses).

Calibration pictures: every 15th frame (at most 12 per file) of the sample videos in
``<shared>/data/videos`` (people in rooms, a shop, a yard, a street), letterboxed as the detector
sees them at 640x384.  None of the CCTV evaluation clips (``data/cctv``) is used, so the coverage
measured on them stays a test of the quantized model, not of its calibration.  Ranges are
ONNX Runtime's MinMax over those pictures.

    python scripts/calibrate_detector.py [--shared ../shared] [--model PATH/nanodet.onnx]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugin"))

from privacy_filter.engines.detector import input_geometry, preprocess_bgr  # noqa: E402
from privacy_filter.models.converter_version import TFJS_CONVERTER_VERSION  # noqa: E402
from privacy_filter.models.quantize import RANGES_FILE, conv_nodes  # noqa: E402
from privacy_filter.models.specs import NANODET  # noqa: E402

#: The 1x1 convolutions that produce the box and class logits: kept in float (models.quantize).
FLOAT_NODES = ["PartitionedCall/convolution_29", "PartitionedCall/convolution_31", "PartitionedCall/convolution_33"]
INPUT_HW = (384, 640)
EVERY, PER_FILE = 15, 12


def calibration_pictures(videos: Path) -> np.ndarray:
    """(N, 3, 384, 640) float32 detector inputs from the sample videos."""
    files = sorted(videos.glob("*.gif")) + sorted(videos.glob("*.mp4"))
    if not files:
        raise SystemExit(f"no sample videos in {videos}")
    out = []
    for path in files:
        n = 0
        with av.open(str(path)) as c:
            for i, frame in enumerate(c.decode(video=0)):
                if i % EVERY:
                    continue
                bgr = frame.to_ndarray(format="bgr24")
                h, w = bgr.shape[:2]
                geo = input_geometry(w, h, INPUT_HW[1] if max(w, h) > 560 else 512)
                buf = np.zeros((3, geo.pad_h, geo.pad_w), np.float32)
                preprocess_bgr(bgr, geo, NANODET, buf)
                x = np.zeros((3, *INPUT_HW), np.float32)
                hh, ww = min(INPUT_HW[0], buf.shape[1]), min(INPUT_HW[1], buf.shape[2])
                x[:, :hh, :ww] = buf[:, :hh, :ww]
                out.append(x)
                n += 1
                if n >= PER_FILE:
                    break
        print(f"{path.name}: {n} pictures")
    return np.stack(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(REPO.parent / "shared"))
    ap.add_argument("--model", default=None, help="the converted nanodet.onnx (default: pulled into the cache)")
    ap.add_argument("--out", default=str(RANGES_FILE))
    args = ap.parse_args()

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, create_calibrator
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if args.model:
        model = Path(args.model)
    else:
        from privacy_filter.models.detector_pull import detector_model_path

        model = detector_model_path("nanodet")
    pictures = calibration_pictures(Path(args.shared) / "data" / "videos")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.i >= len(pictures):
                return None
            self.i += 1
            return {NANODET.input_name: pictures[self.i - 1 : self.i]}

    with tempfile.TemporaryDirectory() as work:
        pre = Path(work) / "pre.onnx"
        quant_pre_process(str(model), str(pre), skip_symbolic_shape=True)  # as models.quantize does
        calibrator = create_calibrator(pre, ["Conv"], augmented_model_path=str(Path(work) / "augmented.onnx"), calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(Reader())
        ranges = calibrator.compute_data()
    tensors = {name: [round(float(np.asarray(v.range_value[0]).item()), 6), round(float(np.asarray(v.range_value[1]).item()), 6)] for name, v in sorted(ranges.data.items())}
    table = {
        "about": f"INT8 activation ranges of NanoDet-g as the TF.js converter (version {TFJS_CONVERTER_VERSION}) writes it: "
        f"ONNX Runtime MinMax over {len(pictures)} pictures of the shared sample videos (not the CCTV evaluation clips); "
        "written by scripts/calibrate_detector.py, read by models/quantize.py",
        "converter_version": TFJS_CONVERTER_VERSION,
        "conv_nodes": conv_nodes(onnx.load(str(model))),
        "float_nodes": FLOAT_NODES,
        "tensors": tensors,
    }
    Path(args.out).write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {args.out}: {len(tensors)} tensor ranges from {len(pictures)} pictures")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
