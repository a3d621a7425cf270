"""The baseline a user would write in an afternoon: PyAV → RGB → ONNX Runtime → cv2 → encode.

It detects people with the same NanoDet-g ONNX model the cctv preset uses, pixelates their
boxes with OpenCV and encodes with the same libx264 settings, one frame at a time in one
thread: no I420 path, no batching, no overlap of decode, inference and encode.  It exists
only as a comparison point for benchmarks/bench_process.py.

    python benchmarks/naive_pixelate.py IN.mp4 OUT.mp4 --model nanodet.onnx [--preset veryfast]
"""

from __future__ import annotations

import argparse

import av
import cv2
import numpy as np
import onnxruntime as ort

MEAN = np.array([103.53, 116.28, 123.675], np.float32)
STD = np.array([57.375, 57.12, 58.395], np.float32)


def people(session: ort.InferenceSession, rgb: np.ndarray, long_side: int = 640, score: float = 0.3) -> list[tuple[int, int, int, int]]:
    """Person boxes (x0, y0, x1, y1) in frame pixels."""
    h, w = rgb.shape[:2]
    k = long_side / max(h, w)
    nh, nw = int(round(h * k)), int(round(w * k))
    ph, pw = -(-nh // 32) * 32, -(-nw // 32) * 32
    img = np.zeros((ph, pw, 3), np.float32)
    img[:nh, :nw] = cv2.resize(rgb, (nw, nh))[:, :, ::-1]
    x = ((img - MEAN) / STD).transpose(2, 0, 1)[None]
    outs = session.run(None, {session.get_inputs()[0].name: x})
    boxes, scores = [], []
    for cls, reg, s in zip(outs[:3], outs[3:], (8, 16, 32)):
        cols = pw // s
        p = cls[0, :, 0]
        keep = np.nonzero(p >= score)[0]
        for i in keep:
            d = np.exp(reg[0, i].reshape(4, 11) - reg[0, i].reshape(4, 11).max(1, keepdims=True))
            dist = (d / d.sum(1, keepdims=True)) @ np.arange(11) * s
            cx, cy = (i % cols + 0.5) * s, (i // cols + 0.5) * s
            boxes.append([cx - dist[0], cy - dist[1], dist[0] + dist[2], dist[1] + dist[3]])
            scores.append(float(p[i]))
    idx = cv2.dnn.NMSBoxes(boxes, scores, score, 0.6) if boxes else []
    out = []
    for i in np.array(idx).reshape(-1):
        x0, y0, bw, bh = (v / k for v in boxes[i])
        out.append((max(0, int(x0)), max(0, int(y0)), min(w, int(x0 + bw) + 1), min(h, int(y0 + bh) + 1)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--model", required=True)
    ap.add_argument("--preset", default="veryfast")
    args = ap.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    with av.open(args.input) as src, av.open(args.output, "w") as dst:
        vin = src.streams.video[0]
        out = dst.add_stream("libx264", rate=vin.average_rate)
        out.width, out.height, out.pix_fmt = vin.width, vin.height, "yuv420p"
        out.options = {"preset": args.preset}
        for frame in src.decode(vin):
            rgb = frame.to_ndarray(format="rgb24")
            for x0, y0, x1, y1 in people(session, rgb):
                roi = rgb[y0:y1, x0:x1]
                if roi.size:
                    small = cv2.resize(roi, (max(1, roi.shape[1] // 16), max(1, roi.shape[0] // 16)), interpolation=cv2.INTER_AREA)
                    rgb[y0:y1, x0:x1] = cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_NEAREST)
            for packet in out.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                dst.mux(packet)
        for packet in out.encode(None):
            dst.mux(packet)


if __name__ == "__main__":
    main()
