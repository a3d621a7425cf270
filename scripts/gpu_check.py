"""One prepared device check of the CUDA path: every step in its own process with its own timeout,
one JSON report.

On a GPU host (CuPy installed; PyAV, pyzmq and pydantic from wheels first with ``--wheels DIR``)::

    python scripts/gpu_check.py --out DIR [--wheels DIR] [--model selfie]

Without a GPU (what this project's machines are)::

    python scripts/gpu_check.py --emulate --out DIR

runs every step that can run without a GPU and marks each step in ``DIR/report.json`` as
``real`` (ran on the GPU), ``emulated`` (ran the same orchestration on the host emulator with lazy
streams, support.gpu_emulation / support.lazy_streams; times are CPU times) or ``skipped`` with the
reason.  Steps (issue 11, build item 7):

probe · kernels (load every module) · parity (effects vs the CPU backend incl. 4K and odd pitches) ·
race_amplifier (a spin kernel before every host read) · sanitizer (compute-sanitizer memcheck and
racecheck on one small frame) · timings (per kernel at 1080p) · device_chain (upload once,
preprocess, decode, apply_device, download) · process (``process --device cuda`` end to end vs CPU).

TensorRT cannot be carried to the GPU host, so its checks are in scripts/tensorrt_check.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "plugin", REPO / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

#: (name, timeout in seconds): the whole list fits in 7 minutes on a GPU host
STEPS: list[tuple[str, int]] = [
    ("install", 90),
    ("probe", 30),
    ("kernels", 60),
    ("parity", 90),
    ("race_amplifier", 45),
    ("sanitizer", 75),
    ("timings", 30),
    ("device_chain", 30),
    ("process", 60),
]
TOL = 2  # levels, the parity bar of tests/gpu/test_kernels_emulated.py
PARITY_SIZES = [(3840, 2160), (641, 361), (1918, 1078)]  # 4K and odd widths (pitch != width)
SPIN_SOURCE = r"""
extern "C" __global__ void spin(long long cycles) {
    long long t0 = clock64();
    while (clock64() - t0 < cycles) { }
}
"""


class Skip(Exception):
    """A step that cannot run here, with the reason."""


def _runtime(emulate: bool) -> Any:
    if emulate:
        from support.gpu_emulation import EmulatedRuntime

        return EmulatedRuntime()
    from privacy_filter.gpu.effects import CupyRuntime

    return CupyRuntime()


def _frame(w: int, h: int, seed: int = 0) -> Any:
    from privacy_filter.frames import YuvFrame, chroma_size

    rng = np.random.default_rng(seed)
    cw, ch = chroma_size(w, h)
    return YuvFrame(rng.integers(0, 256, (h, w), dtype=np.uint8), rng.integers(0, 256, (ch, cw), dtype=np.uint8), rng.integers(0, 256, (ch, cw), dtype=np.uint8))


def _prob(h: int = 144, w: int = 256, t: int = 0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = ((xx / w - 0.3 - 0.1 * t) / 0.15) ** 2 + ((yy / h - 0.5) / 0.35) ** 2
    return np.clip(1.5 - d, 0, 1).astype(np.float32)


EFFECTS = {
    "pixelate-hold-dilate-feather": ({"kind": "pixelate"}, {"temporal": "hold", "hold_frames": 3, "dilate_px": 3, "feather_px": 4}),
    "blur-background-smooth": ({"kind": "blur", "target": "background"}, {"temporal": "smooth", "feather_px": 3}),
    "fill": ({"kind": "fill", "color": [20, 20, 20]}, {}),
    "overlay": ({"kind": "overlay", "color": [255, 0, 0], "overlay_opacity": 0.5}, {"feather_px": 2}),
}


def _parity(rt: Any, sizes: list[tuple[int, int]], frames: int) -> dict[str, Any]:
    from privacy_filter.config import EffectConfig, MaskConfig
    from privacy_filter.effects.cpu import CpuStreamEffect
    from privacy_filter.gpu.effects import CudaStreamEffect

    out: dict[str, Any] = {}
    ok = True
    for w, h in sizes:
        for name, (ec, mc) in EFFECTS.items():
            e, m = EffectConfig(**ec), MaskConfig(**mc)
            gpu, cpu = CudaStreamEffect(e, m, rt), CpuStreamEffect(e, m)
            worst, alpha_equal = 0, True
            for t in range(frames):
                f = _frame(w, h, t)
                g, c = f.copy(), f.copy()
                ag, ac = gpu.apply(g, _prob(t=t)), cpu.apply(c, _prob(t=t))
                worst = max(worst, max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(g.planes, c.planes)))
                alpha_equal &= bool(np.array_equal(ag, ac))
            good = worst <= TOL and alpha_equal
            ok &= good
            out[f"{w}x{h} {name}"] = {"max_diff": worst, "alpha_equal": alpha_equal, "ok": good}
    return {"ok": ok, "cases": out}


# ------------------------------------------------------------------------------ the steps


def step_install(args: argparse.Namespace) -> dict[str, Any]:
    if args.emulate:
        raise Skip("--emulate: nothing to install (the checkout's environment is used)")
    if not args.wheels:
        raise Skip("no --wheels DIR given (PyAV, pyzmq, pydantic assumed installed)")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", args.wheels, "av", "pyzmq", "pydantic"]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return {"ok": res.returncode == 0, "stderr": res.stderr[-2000:]}


def step_probe(args: argparse.Namespace) -> dict[str, Any]:
    if args.emulate:
        from privacy_filter.gpu.effects import PROBE_N, PROBE_SOURCE
        from support.gpu_emulation import HostRawModule

        out = np.zeros(PROBE_N, np.int32)
        HostRawModule(PROBE_SOURCE).get_function("privacy_filter_probe")((1, 1, 1), (PROBE_N, 1, 1), (np.arange(PROBE_N, dtype=np.int32), out, np.int32(PROBE_N)))
        return {"ok": bool(np.array_equal(out, 2 * np.arange(PROBE_N) + 1)), "note": "probe kernel built by g++ and run on the CPU"}
    from privacy_filter.gpu.effects import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    return {"ok": reason is None, "reason": reason}


def step_kernels(args: argparse.Namespace) -> dict[str, Any]:
    from privacy_filter.gpu.effects import KERNEL_FILES, compile_module, kernel_source

    mods: dict[str, Any] = {}
    for name in KERNEL_FILES:
        t0 = time.perf_counter()
        if args.emulate:
            from support.gpu_emulation import load_kernel_module, nvrtc_compile

            load_kernel_module(name)
            try:
                nvrtc_compile(kernel_source(name), include_kernel_dir=False)
                nvrtc = "ok"
            except Exception as exc:  # noqa: BLE001 - NVRTC missing here is reported, not fatal
                nvrtc = f"not checked: {type(exc).__name__}: {str(exc)[:200]}"
            mods[name] = {"host_build_s": round(time.perf_counter() - t0, 2), "nvrtc_ptx": nvrtc}
        else:
            import cupy

            mod = compile_module(cupy, kernel_source(name))
            from privacy_filter.gpu.kernel_abi import parse_kernels

            for k in parse_kernels(kernel_source(name)):
                mod.get_function(k)
            mods[name] = {"compile_load_s": round(time.perf_counter() - t0, 2)}
    return {"ok": True, "modules": mods}


def step_parity(args: argparse.Namespace) -> dict[str, Any]:
    rt = _runtime(args.emulate)
    # one frame per case when emulated (4K on the CPU is slow), three on a GPU (temporal state)
    return _parity(rt, PARITY_SIZES, 1 if args.emulate else 3)


def step_race_amplifier(args: argparse.Namespace) -> dict[str, Any]:
    if args.emulate:
        rt = _runtime(True)
        res = _parity(rt, [(641, 361)], 2)
        res["note"] = "lazy-stream emulation: queued work runs only when ordered by a synchronisation or an event, which is an infinitely long spin kernel before every host read"
        return res
    import cupy

    from privacy_filter.gpu.effects import CupyRuntime

    spin = cupy.RawModule(code=SPIN_SOURCE).get_function("spin")

    class Amplified(CupyRuntime):
        def to_host(self, dev: Any, out: np.ndarray) -> np.ndarray:
            with self.stream:
                spin((1,), (1,), (np.int64(2_000_000),))  # ~1 ms of GPU time queued before the copy
            return super().to_host(dev, out)

    return _parity(Amplified(), [(641, 361), (1920, 1080)], 3)


def step_sanitizer(args: argparse.Namespace) -> dict[str, Any]:
    if args.emulate:
        raise Skip("compute-sanitizer needs a GPU")
    exe = shutil.which("compute-sanitizer") or ("/usr/local/cuda/bin/compute-sanitizer" if Path("/usr/local/cuda/bin/compute-sanitizer").exists() else None)
    if exe is None:
        raise Skip("compute-sanitizer not found (it comes with the CUDA toolkit, not with CuPy's wheels)")
    out: dict[str, Any] = {"ok": True}
    for tool in ("memcheck", "racecheck"):
        cmd = [exe, "--tool", tool, "--error-exitcode", "3", sys.executable, __file__, "--small-frame"]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=35)
        out[tool] = {"rc": res.returncode, "tail": (res.stdout + res.stderr)[-1500:]}
        out["ok"] &= res.returncode == 0
    return out


def step_timings(args: argparse.Namespace) -> dict[str, Any]:
    from privacy_filter.config import EffectConfig, MaskConfig
    from privacy_filter.gpu.effects import CudaStreamEffect

    rt = _runtime(args.emulate)
    rt.profile = {}
    for name, (ec, mc) in EFFECTS.items():
        fx = CudaStreamEffect(EffectConfig(**ec), MaskConfig(**mc), rt)
        for t in range(1 if args.emulate else 10):
            fx.apply(_frame(1920, 1080, t), _prob(t=t % 3))
    times = {k: {"launches": len(v), "median_ms": float(np.median(v))} for k, v in sorted(rt.kernel_times().items())}
    return {"ok": True, "kernels": times, "unit": "CPU ms (emulation)" if args.emulate else "GPU ms (CUDA events)"}


def step_device_chain(args: argparse.Namespace) -> dict[str, Any]:
    """Upload once → preprocess_yuv → (an engine's output: synthetic logits) → decode → apply_device → download."""
    from privacy_filter.config import EffectConfig, MaskConfig
    from privacy_filter.effects.cpu import CpuStreamEffect
    from privacy_filter.engines import outputs as cpu_outputs
    from privacy_filter.gpu.effects import CudaStreamEffect, DevicePlanes
    from privacy_filter.gpu.model_io import CudaPreprocessor, decode_output
    from privacy_filter.models.specs import SELFIE

    rt = _runtime(args.emulate)
    f = _frame(1280, 720)
    with rt.stream_context():
        d = DevicePlanes.allocate(rt.xp, f.width, f.height, "nv12")
        d.upload(rt, f.y, f.u, f.v)
    pre = CudaPreprocessor(SELFIE, rt)
    pre([d])
    spec = SELFIE.model_copy(update={"output_kind": "logits"})
    logits = (_prob(256, 256)[None, None] * 8 - 4).astype(np.float32)
    with rt.stream_context():
        d_logits = rt.to_device(logits)
    prob = decode_output(d_logits, spec, rt)[0]
    ec, mc = EffectConfig(kind="pixelate"), MaskConfig(dilate_px=2)
    alpha_dev = CudaStreamEffect(ec, mc, rt).apply_device(d, prob)
    g = f.copy()
    d.download(rt, g.y, g.u, g.v)
    alpha = rt.to_host(alpha_dev, np.empty((f.height, f.width), np.uint8))
    c = f.copy()
    ac = CpuStreamEffect(ec, mc).apply(c, cpu_outputs.to_probability(logits, spec)[0])
    diff = max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(g.planes, c.planes))
    alpha_diff = float(np.mean(alpha != ac))
    return {"ok": diff <= TOL and alpha_diff <= 0.001, "max_diff": diff, "alpha_differs": alpha_diff}


def step_process(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import av  # noqa: F401
    except ImportError:
        raise Skip("PyAV not installed (install it from wheels first: --wheels)") from None
    from privacy_filter.cli import main as cli

    work = Path(args.out) / "process"
    work.mkdir(parents=True, exist_ok=True)
    src = "lavfi:testsrc2=size=640x360:rate=10:duration=0.5"
    # background target: the effect covers (nearly) the whole test pattern, so the comparison means something
    common = ["--effect", "pixelate", "--target", "background", "--no-progress"] + (["--model", args.model] if args.model else [])
    if args.emulate:
        from privacy_filter.gpu import effects as cuda
        from support.gpu_emulation import EmulatedRuntime

        shared = EmulatedRuntime()
        cuda.cuda_unavailable_reason = lambda: None  # type: ignore[assignment]
        cuda.StageDevice.create = classmethod(lambda cls, device=0: cls(shared))  # type: ignore[method-assign,assignment]
    rc_cuda = cli(["process", src, str(work / "cuda.mkv"), "--segmentation-device", "cpu", "--effects-device", "cuda", *common])
    launched = len(shared.launches) if args.emulate else None
    rc_cpu = cli(["process", src, str(work / "cpu.mkv"), "--device", "cpu", *common])
    if rc_cuda or rc_cpu:
        return {"ok": False, "rc_cuda": rc_cuda, "rc_cpu": rc_cpu}
    import av

    def planes(path: Path) -> list[np.ndarray]:
        with av.open(str(path)) as c:
            return [fr.to_ndarray(format="yuv420p") for fr in c.decode(video=0)]

    a, b = planes(work / "cuda.mkv"), planes(work / "cpu.mkv")
    diff = max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b)) if a and len(a) == len(b) else None
    # both outputs went through the same lossy encoder; the bar is loose on purpose
    if args.emulate and not launched:
        return {"ok": False, "error": "the CUDA effects did not run (no emulated kernel launches)"}
    return {
        "ok": diff is not None and diff <= 8,
        "frames": len(a),
        "max_diff_after_encoding": diff,
        "emulated_launches": launched,
        "note": "segmentation on ONNX Runtime (CPU) in both runs: the TensorRT device-resident chain is in tensorrt_check.py",
    }


def small_frame() -> int:
    """What compute-sanitizer runs: one small frame through every effect on the GPU."""
    return 0 if _parity(_runtime(False), [(96, 64)], 1)["ok"] else 1


# --------------------------------------------------------------------------- orchestration


def run_step(name: str, args: argparse.Namespace) -> dict[str, Any]:
    fn = globals()[f"step_{name}"]
    t0 = time.perf_counter()
    try:
        res = fn(args)
        res["mode"] = "emulated" if args.emulate else "real"
    except Skip as exc:
        res = {"mode": "skipped", "reason": str(exc), "ok": None}
    except Exception as exc:  # noqa: BLE001 - a failing step is reported, the others still run
        res = {"mode": "emulated" if args.emulate else "real", "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="gpu_check_out")
    ap.add_argument("--emulate", action="store_true", help="no GPU: run what can run on the host emulator")
    ap.add_argument("--wheels", help="directory of wheels for PyAV, pyzmq, pydantic (installed first)")
    ap.add_argument("--model", help="segmentation model for the process step (default: the built-in default)")
    ap.add_argument("--steps", help="comma-separated subset of: " + ",".join(n for n, _ in STEPS))
    ap.add_argument("--step", help=argparse.SUPPRESS)  # internal: run one step, write its JSON to --result
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--small-frame", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.small_frame:
        return small_frame()
    if args.step:
        Path(args.result).write_text(json.dumps(run_step(args.step, args)))
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    wanted = set(args.steps.split(",")) if args.steps else None
    report: dict[str, Any] = {"emulate": args.emulate, "python": sys.version.split()[0], "steps": {}}
    for name, timeout in STEPS:
        if wanted is not None and name not in wanted:
            continue
        result = out / f"{name}.json"
        cmd = [sys.executable, __file__, "--step", name, "--result", str(result), "--out", str(out)]
        cmd += (["--emulate"] if args.emulate else []) + (["--wheels", args.wheels] if args.wheels else [])
        cmd += ["--model", args.model] if args.model else []
        t0 = time.perf_counter()
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout * (4 if args.emulate else 1), check=False, env={**os.environ})
            step = (
                json.loads(result.read_text())
                if result.exists()
                else {"mode": "emulated" if args.emulate else "real", "ok": False, "error": f"exit {res.returncode}: {res.stderr[-1500:]}"}
            )
        except subprocess.TimeoutExpired:
            step = {"mode": "emulated" if args.emulate else "real", "ok": False, "error": f"timed out after {timeout * (4 if args.emulate else 1)} s"}
        step["timeout_s"] = timeout * (4 if args.emulate else 1)  # the host emulator is slower than a GPU
        step.setdefault("seconds", round(time.perf_counter() - t0, 2))
        report["steps"][name] = step
        print(f"{name:<16} {step['mode']:<9} ok={step.get('ok')} {step.get('reason') or step.get('error') or ''}", flush=True)
    report["ok"] = all(s.get("ok") is not False for s in report["steps"].values())
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"report: {out / 'report.json'}  ok={report['ok']}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
