"""End-to-end smoke test of the CUDA path, for a user with an NVIDIA GPU.

This project's CI has no GPU, so the CuPy backend has only been verified by compiling every
kernel (NVRTC, nvcc sm_75..sm_90) and by running the same kernels under host emulation
(docs/gpu.md).  This script is the missing step.  On a machine with a GPU and
``pip install -e .[gpu]`` (plus NVRTC: ``nvidia-cuda-nvrtc-cu12`` or ``cupy-cuda12x[ctk]``):

    python scripts/gpu_smoke.py                 # 1920x1080, 30 frames
    python scripts/gpu_smoke.py --size 1280x720 --frames 60 --json

It
1. generates a clip with PyAV (H.264, yuv420p): a textured background and a moving
   "person" (an ellipse with its own texture), and decodes it back;
2. runs every effect (cctv-like pixelate with hold/dilation/feather, blur on the
   background with smoothing, fill, overlay, none) through the real CuPy backend
   (``effects.cuda.CudaStreamEffect``) and through the CPU backend, frame by frame, with the
   ellipse's 256x256 probability map (soft edge) as the model output;
3. runs the device preprocessing (selfie spec, batch of 4) and output decoding against
   ``engines.preprocess`` / ``engines.outputs``;
4. prints per-kernel GPU times (CUDA events), the implied bandwidth for 1080p, and the
   largest difference from the CPU backend.  Exit status 0 only if every output is within
   ±2 levels of the CPU backend (alpha exact).

``--emulate`` runs the identical orchestration on the CPU through the host emulation (the
test harness), which is how this script itself was checked; its times are CPU times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from privacy_filter.config import EffectConfig, MaskConfig
from privacy_filter.effects.cpu import CpuStreamEffect
from privacy_filter.engines import outputs as cpu_outputs
from privacy_filter.engines.preprocess import yuv_into, yuv_to_rgb_matrix
from privacy_filter.frames import YuvFrame, chroma_size
from privacy_filter.gpu.effects import CudaStreamEffect, CupyRuntime, DevicePlanes, cuda_unavailable_reason
from privacy_filter.gpu.model_io import CudaPreprocessor, decode_output
from privacy_filter.models.specs import SELFIE
from support.gpu_emulation import EmulatedRuntime

# Ideal DRAM bytes per launch at 1920x1080 with a 256x256 model map (the kernel headers).
BYTES_1080P = {
    "mask_temporal_quantize": 1.9e6,
    "mask_upsample_threshold": 2.2e6,
    "dilate_rows": 4.1e6,
    "dilate_cols": 4.1e6,
    "feather_rows": 6.2e6,
    "feather_cols_alpha": 6.2e6,
    "chroma_alpha": 2.6e6,
    "composite_const": 8.3e6,
    "composite_planes": 11.4e6,
    "pixelate_composite": 8.3e6,
    "cell_means": 1.04e6,
    "box_mean": 0.02e6,
    "composite_blur": 8.4e6,
    "preprocess_yuv": 3.8e6,
    "decode_channel_f32": 0.52e6,
    "decode_logits_f32": 0.79e6,
}

EFFECTS = {
    "cctv-pixelate": (EffectConfig(kind="pixelate"), MaskConfig(threshold=0.3, dilate_frac=0.02, temporal="hold", hold_frames=8)),
    "call-blur-bg": (EffectConfig(kind="blur", target="background"), MaskConfig(dilate_px=2, feather_px=6, temporal="smooth")),
    "fill": (EffectConfig(kind="fill", color=(20, 20, 20)), MaskConfig(dilate_px=4)),
    "overlay": (EffectConfig(kind="overlay", color=(255, 0, 0), overlay_opacity=0.5), MaskConfig(feather_px=3)),
    "none": (EffectConfig(kind="none"), MaskConfig()),
}


def person_prob(t: int, n: int, h: int = 256, w: int = 256) -> np.ndarray:
    """The moving ellipse as a soft probability map at model resolution."""
    cx = 0.25 + 0.5 * t / max(1, n - 1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = ((xx / w - cx) / 0.12) ** 2 + ((yy / h - 0.55) / 0.3) ** 2
    return np.clip(1.5 - d, 0.0, 1.0).astype(np.float32)


def generate_clip(path: Path, width: int, height: int, frames: int) -> None:
    rng = np.random.default_rng(7)
    bg = cv2.resize(rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8), (width, height), interpolation=cv2.INTER_CUBIC)
    tex = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(25))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "crf": "20"}
        for t in range(frames):
            prob = cv2.resize(person_prob(t, frames), (width, height))
            img = np.where((prob > 0.5)[..., None], tex, bg).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def decode_clip(path: Path) -> list[YuvFrame]:
    out = []
    with av.open(str(path)) as c:
        for i, fr in enumerate(c.decode(video=0)):
            h, w = fr.height, fr.width
            cw, ch = chroma_size(w, h)
            planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width].copy() for p in fr.planes]
            assert planes[1].shape == (ch, cw)
            out.append(YuvFrame(*planes, pts=fr.pts, index=i))
    return out


def maxdiff(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> int:
    return max(int(np.abs(x.astype(np.int32) - y.astype(np.int32)).max()) for x, y in zip(a, b))


def run(args: argparse.Namespace) -> dict:
    width, height = (int(v) for v in args.size.lower().split("x"))
    rt = EmulatedRuntime() if args.emulate else CupyRuntime()
    rt.profile = {}
    work = Path(tempfile.mkdtemp(prefix="gpu_smoke_"))
    clip = work / "clip.mp4"
    generate_clip(clip, width, height, args.frames)
    frames = decode_clip(clip)
    report: dict = {"device": "emulated (CPU)" if args.emulate else _device_name(rt), "size": [width, height], "frames": len(frames), "effects": {}, "ok": True}

    for name, (ec, mc) in EFFECTS.items():
        gpu, cpu = CudaStreamEffect(ec, mc, rt), CpuStreamEffect(ec, mc)
        worst, alpha_ok, t_gpu, t_cpu = 0, True, [], []
        for t, f in enumerate(frames):
            prob = person_prob(t, len(frames))
            g, c = f.copy(), f.copy()
            t0 = time.perf_counter()
            ag = gpu.apply(g, prob)
            t1 = time.perf_counter()
            ac = cpu.apply(c, prob)
            t2 = time.perf_counter()
            t_gpu.append((t1 - t0) * 1e3)
            t_cpu.append((t2 - t1) * 1e3)
            worst = max(worst, maxdiff(g.planes, c.planes))
            alpha_ok &= bool(np.array_equal(ag, ac))
        g, c = frames[0].copy(), frames[0].copy()
        cover = maxdiff((gpu.cover_whole(g), *g.planes), (cpu.cover_whole(c), *c.planes))
        ok = worst <= 2 and alpha_ok and cover <= 2
        report["ok"] &= ok
        report["effects"][name] = {
            "max_diff_vs_cpu": worst,
            "alpha_equal": alpha_ok,
            "cover_whole_diff": cover,
            "apply_ms_median": statistics.median(t_gpu),
            "cpu_apply_ms_median": statistics.median(t_cpu),
            "ok": ok,
        }

    # engine input / output on the device
    pre = CudaPreprocessor(SELFIE, rt)
    batch = frames[:4]
    dev = []
    with rt.stream_context():  # allocations (CuPy: memsets) and uploads on the runtime's stream, in order
        for i, f in enumerate(batch):
            d = DevicePlanes.allocate(rt.xp, f.width, f.height, "nv12" if i % 2 else "i420")
            d.upload(rt, f.y, f.u, f.v)
            dev.append(d)
    out, _ = pre(dev)
    got = _host(rt, out)
    want = np.zeros_like(got)
    for i, f in enumerate(batch):
        yuv_into(f.y, f.u, f.v, SELFIE, want[i])
    pre_diff = float(np.abs(got - want).max() * 255.0)
    logits = (np.stack([person_prob(t, len(frames)) for t in range(4)])[:, None] * 8.0 - 4.0).astype(np.float32)
    spec = SELFIE.model_copy(update={"output_kind": "logits"})
    with rt.stream_context():  # the input must be uploaded on the stream that decodes it, not the default stream
        d_logits = rt.to_device(logits)
    dec = _host(rt, decode_output(d_logits, spec, rt))
    dec_diff = float(np.abs(dec - cpu_outputs.to_probability(logits, spec)).max() * 255.0)
    report["preprocess_max_diff_levels"] = pre_diff
    report["decode_max_diff_levels"] = dec_diff
    # one 8-bit level in each plane, through the YUV->RGB matrix (~3.5 RGB levels): the kernel
    # resamples within one level of OpenCV (tests/test_kernels_emulated.py)
    one_level = float(np.abs(yuv_to_rgb_matrix("bt601", False)[:, :3]).sum(1).max()) + 0.01
    report["ok"] &= pre_diff <= one_level and dec_diff <= 2.0

    kernels = {}
    for k, ms in sorted(rt.kernel_times().items()):
        med = statistics.median(ms)
        row = {"launches": len(ms), "median_ms": med}
        if not args.emulate and (width, height) == (1920, 1080) and k in BYTES_1080P and med > 0:
            row["GB_per_s"] = BYTES_1080P[k] / (med * 1e-3) / 1e9
        kernels[k] = row
    report["kernels"] = kernels
    return report


def _host(rt, a) -> np.ndarray:
    """A device result on the host: copied on the runtime's (non-blocking) stream, which is then
    synchronised (``Runtime.to_host``).  ``a.get()`` would copy on the default stream, which does
    not wait for a non-blocking stream: a race."""
    return rt.to_host(a, np.empty(a.shape, a.dtype))


def _device_name(rt) -> str:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    return props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--emulate", action="store_true", help="run the same code under host emulation (no GPU)")
    ap.add_argument("--json", action="store_true", help="print the JSON report only")
    args = ap.parse_args(argv)
    if not args.emulate:
        reason = cuda_unavailable_reason()
        if reason:
            print(f"CUDA unavailable: {reason}. Run on a machine with an NVIDIA GPU, or use --emulate.", file=sys.stderr)
            return 2
    report = run(args)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    print(f"device: {report['device']}   {report['size'][0]}x{report['size'][1]}, {report['frames']} frames")
    print(f"{'effect':<16}{'max |gpu-cpu|':>14}{'alpha ==':>10}{'cover diff':>12}{'gpu ms':>9}{'cpu ms':>9}")
    for name, r in report["effects"].items():
        print(f"{name:<16}{r['max_diff_vs_cpu']:>14}{r['alpha_equal']!s:>10}{r['cover_whole_diff']:>12}{r['apply_ms_median']:>9.2f}{r['cpu_apply_ms_median']:>9.2f}")
    print(f"preprocess max diff {report['preprocess_max_diff_levels']:.2f} levels, decode max diff {report['decode_max_diff_levels']:.2f} levels")
    print(f"\n{'kernel':<26}{'launches':>9}{'median ms':>11}{'GB/s':>8}")
    for k, r in report["kernels"].items():
        gbs = f"{r['GB_per_s']:.0f}" if "GB_per_s" in r else "-"
        print(f"{k:<26}{r['launches']:>9}{r['median_ms']:>11.4f}{gbs:>8}")
    print("\nRESULT:", "OK (every output within ±2 levels of the CPU backend)" if report["ok"] else "MISMATCH")
    print(json.dumps(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
