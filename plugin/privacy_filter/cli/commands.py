"""Command handlers of the CLI: each turns parsed arguments into a call of the library."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from privacy_filter.errors import ModelError, SourceError, UserError
from privacy_filter.pipeline import Interrupted, ProcessPlan, ProcessReport, bound_heap, plan_from_stream_config, run_process

if TYPE_CHECKING:
    from privacy_filter.engines.refine import Refine
    from privacy_filter.gpu.tensorrt.runtime import TensorDesc
    from privacy_filter.gpu.tensorrt.sidecar import EngineInfo

# Each command imports what only it needs: `process` is the one run per file and per benchmark
# repeat, and the service, evaluation, TensorRT and demo modules (and pyzmq) cost it ~0.1 s of
# start-up (importing this module: 0.44-0.63 s before, 0.33-0.35 s after).


def cmd_run(args: argparse.Namespace) -> int:
    """``privacy-filter run CONFIG``."""
    from privacy_filter.config import load_service
    from privacy_filter.service.supervisor import preflight_devices, preflight_outputs, run_service

    cfg = load_service(args.config)
    preflight_outputs(cfg)
    preflight_devices(cfg)
    return run_service(cfg, say=lambda line: print(line, flush=True))


def cmd_keys(args: argparse.Namespace) -> int:
    """``privacy-filter keys DIR``: CURVE key pairs for a tcp service."""
    from privacy_filter.service.state import generate_keys

    for path in generate_keys(args.dir):
        print(path)
    print(f"set `zmq: {{transport: tcp, keys: {args.dir}}}` in the service config; keep the *.key_secret files private")
    return 0


def build_plan(args: argparse.Namespace) -> ProcessPlan:
    """Preset, then --config defaults, then the environment, then flags (later wins)."""
    from privacy_filter.config import stream_config

    overrides: dict[str, Any] = {}
    effect = {k: v for k, v in (("kind", getattr(args, "effect", None)), ("target", getattr(args, "target", None))) if v}
    if effect:
        overrides["effect"] = effect
    if getattr(args, "model", None):
        overrides["model"] = args.model
    for name in ("device", "segmentation_device", "effects_device"):
        if getattr(args, name, None):  # None: the flag was not given (config/env/default decide)
            overrides[name] = getattr(args, name)
    overrides.update(cover_overrides(args))
    if getattr(args, "tiles", None):
        overrides["tiles"] = args.tiles
    if getattr(args, "overwrite", None) is not None:
        overrides["output"] = {"overwrite": args.overwrite}
    cfg = stream_config(args.input, args.output, preset=getattr(args, "preset", None), config_path=getattr(args, "config", None), overrides=overrides)
    return plan_from_stream_config(cfg)


def cover_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--detector`` / ``--cover`` as config keys."""
    out: dict[str, Any] = {}
    if getattr(args, "detector", None):
        out["detector"] = {"name": args.detector}
    if getattr(args, "cover", None):
        out["cover"] = args.cover
    return out


def still_engine(args: argparse.Namespace) -> Any:
    """``segment``/``eval``: the full-frame model, or with ``--detector`` the cover engine without motion."""
    if (getattr(args, "detector", None) or "none") == "none":
        from privacy_filter.backends import create_segmenter

        return create_segmenter(args.model, device=args.device, tiles=getattr(args, "tiles", None))
    from privacy_filter.backends import create_cover_engine
    from privacy_filter.config import DetectorConfig
    from privacy_filter.engines.finder import CoverSettings

    settings = CoverSettings(detector=DetectorConfig(name=args.detector), cover=getattr(args, "cover", None) or "box")
    return create_cover_engine({"still": settings}, model=args.model, device=args.device)


def cmd_eval_video(args: argparse.Namespace) -> int:
    """``privacy-filter eval-video VIDEO --boxes GT.csv [--heads H.csv] [--preset/--config] [--json]``."""
    from privacy_filter.config import stream_config
    from privacy_filter.evaluate import evaluate_video, format_video_report

    overrides: dict[str, Any] = cover_overrides(args)
    if getattr(args, "model", None):
        overrides["model"] = args.model
    cfg = stream_config(args.video, "", preset=args.preset, config_path=args.config, overrides=overrides)
    picture = args.picture or f"{Path(args.video).stem}_worst.png"
    report = evaluate_video(args.video, args.boxes, cfg, heads_csv=args.heads, picture=picture, progress=not args.no_progress and not args.json)
    print(json.dumps(asdict(report), indent=2) if args.json else format_video_report(report))
    return 0


def cmd_process(args: argparse.Namespace) -> int:
    import cv2

    # Parallelism here comes from the decode/stage/encode threads (and FFmpeg's own); OpenCV's
    # worker pool on top only adds hand-offs and spinning (measured: -17 % CPU, -15 % wall at 1080p).
    cv2.setNumThreads(1)
    plan = build_plan(args)
    bound_heap(low_memory=plan.encode.low_memory)
    # Everything imported so far (NumPy, PyAV, pydantic, ...) lives until exit: keep it out of
    # the cyclic GC, whose passes over it (and the final one at exit) cost ~0.2 s per run
    # (measured 1.21 → 1.01 s for a 3-frame clip; a sizeable part of a short file's run).
    gc.freeze()
    # SIGTERM (systemd, `timeout`, a container stop) ends the run as Ctrl-C does (run_process
    # handles both): the output is closed and stays playable, and the summary is printed
    stopped = False
    try:
        report = run_process(args.input, args.output, plan, mask_out=args.mask_out, progress=not getattr(args, "no_progress", False))
    except Interrupted as exc:
        report, stopped = exc.report, True
    print(_summary(args, report) + (" (interrupted; the output was closed)" if stopped else ""))
    if getattr(args, "report", None):
        fields = {f.name: getattr(report, f.name) for f in dataclasses.fields(report) if f.name != "info"}
        Path(args.report).write_text(json.dumps({**fields, "fps": report.fps, "interrupted": stopped}, indent=2) + "\n")
    return 130 if stopped else 0


def _summary(args: argparse.Namespace, report: ProcessReport) -> str:
    """The one line ``process`` ends with: what went in, what came out, and everything counted on the way."""
    return (
        f"{args.output}: {report.frames_out} frames out of {report.frames_in} in "
        f"({report.frames_covered_whole} covered whole, {report.frames_dropped} dropped"
        + (f", {report.frames_passed_unfiltered} passed UNFILTERED" if report.frames_passed_unfiltered else "")
        + "), "
        f"{report.audio_packets} audio packets, {report.seconds:.1f} s, {report.fps:.1f} fps"
        + (f"; masks in {args.mask_out}" if args.mask_out else "")
        + (f"; {report.bad_messages} malformed messages dropped" if report.bad_messages else "")
        + (f"; {report.frames_resized} frames of another size scaled to the first's" if report.frames_resized else "")
        + (f"; the source ENDED EARLY, about {report.frames_missing} frames short of its declared duration" if report.frames_missing else "")
    )


def _refine_arg(args: argparse.Namespace) -> Refine:
    from privacy_filter.evaluate import DEFAULT_REFINE

    return getattr(args, "refine", None) or DEFAULT_REFINE


def cmd_segment(args: argparse.Namespace) -> int:
    import cv2

    from privacy_filter.evaluate import collect_images, mask_png, person_probability, progress_bar, read_image

    images = collect_images(args.inputs)
    if not images:
        raise SourceError(f"no images found in {', '.join(map(str, args.inputs))}")
    stems: dict[str, Path] = {}
    for p in images:
        if p.stem in stems:
            raise UserError(f"two inputs would write the same mask {p.stem}.png: {stems[p.stem]} and {p}")
        stems[p.stem] = p
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seg = still_engine(args)
    failed: list[str] = []
    for path in progress_bar(images, "segment"):
        try:
            img = read_image(path)
        except SourceError as exc:
            print(f"privacy-filter segment: {exc}", file=sys.stderr)
            failed.append(str(path))
            continue
        mask = mask_png(person_probability(seg, img, _refine_arg(args)), bool(args.soft))
        if not cv2.imwrite(str(out / f"{path.stem}.png"), mask):
            raise UserError(f"cannot write {out / (path.stem + '.png')}")
    if failed:
        raise SourceError(f"{len(failed)} of {len(images)} images could not be read: {', '.join(failed)} (masks for the others are in {out})")
    print(f"privacy-filter segment: {len(images)} masks written to {out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from privacy_filter.evaluate import collect_images, evaluate, format_table, pair_masks

    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise SourceError(f"no such images folder: {images_dir}")
    images = collect_images([images_dir])
    if args.limit is not None:
        images = images[: max(0, args.limit)]
    if not images:
        raise SourceError(f"no images found in {images_dir}")
    pairs = pair_masks(images, Path(args.masks))
    tiles = getattr(args, "tiles", None)
    seg = still_engine(args)
    result = evaluate(seg, pairs, progress=True, tiles=str(tiles or "off"), refine=_refine_arg(args))
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(format_table(result))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from privacy_filter.demo import DEFAULT_OUT, run_demo

    out_dir = Path(getattr(args, "out", None) or DEFAULT_OUT)
    files = run_demo(out_dir)
    print("privacy-filter demo: a 4 s clip of one photo of a person (scikit-image's astronaut) pasted at two sizes,\ncrossing a drawn room, filtered with both presets")
    print(f"  input clip          {files['input']}")
    print(f"  cctv preset         {files['cctv']}   (people pixelated, audio dropped)")
    print(f"  video-call preset   {files['video-call']}   (background blurred, audio kept)")
    print(f"  before / after      {files['picture']}")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """``privacy-filter engine build MODEL --out ENGINE [--precision] [--max-batch] [--calib-cache]``."""
    from privacy_filter.gpu.tensorrt.build import BuildOptions, build_engine
    from privacy_filter.gpu.tensorrt.sidecar import ENGINE_SUFFIXES, sidecar_path
    from privacy_filter.models.registry import resolve_model

    out = Path(args.out)
    if out.suffix.lower() not in ENGINE_SUFFIXES:
        raise UserError(f"--out {out}: name the engine file with one of {', '.join(ENGINE_SUFFIXES)} so that --model recognises it")
    from privacy_filter.models.registry import ResolvedDetector, ResolvedModel, resolve_detector
    from privacy_filter.models.specs import DETECTOR_SPECS

    detector = args.model.partition(":")[0] in DETECTOR_SPECS  # nanodet, or nanodet:/path.onnx
    resolved: ResolvedModel | ResolvedDetector = resolve_detector(args.model) if detector else resolve_model(args.model)
    if args.max_side is not None and not detector:
        raise UserError("--max-side is for detector engines (their input size follows the frame); segmentation models have a fixed input size")
    options = BuildOptions(
        precision=args.precision,
        max_batch=int(args.max_batch),
        calib_cache=Path(args.calib_cache) if args.calib_cache else None,
        max_side=args.max_side,
    )
    info = build_engine(resolved.spec, resolved.onnx_path, out, options)
    print(f"wrote {out} ({info.precision}, batch 1..{info.max_batch}, TensorRT {info.tensorrt_version}, {info.gpu})")
    print(f"wrote {sidecar_path(out)}")
    if detector:
        print(f"use it with: detector: {{name: {out}}} and device: cuda in a config (or --config) with the cctv preset")
    else:
        print(f"use it with: privacy-filter process IN OUT --device cuda --model {out}")
    return 0


def describe_engine(info: EngineInfo | None, io: list[TensorDesc] | None, profile: dict[str, Any] | None = None) -> str:
    lines = []
    if info is not None:
        lines += [
            f"built with TensorRT {info.tensorrt_version} on {info.gpu}, {info.built_utc}",
            f"precision {info.precision}, batch 1..{info.max_batch}",
            f"from {info.onnx} (sha256 {info.onnx_sha256[:16]}…)",
            info.spec.describe(),
        ]
    if io is not None:
        lines.append("tensors:")
        for t in io:
            extra = ""
            if profile and t.name in profile:
                mn, opt, mx = profile[t.name]
                extra = f"  profile min {list(mn)} opt {list(opt)} max {list(mx)}"
            lines.append(f"  {t}{extra}")
    return "\n".join(lines)


def cmd_engine_inspect(args: argparse.Namespace) -> int:
    """``privacy-filter engine inspect ENGINE``: the sidecar, then the engine's own I/O (needs TensorRT)."""
    from privacy_filter.gpu.tensorrt.loader import gpu_name, import_tensorrt, trt_major
    from privacy_filter.gpu.tensorrt.runtime import deserialize, engine_io
    from privacy_filter.gpu.tensorrt.sidecar import check_engine_compatible, read_sidecar, sidecar_path

    path = Path(args.engine)
    if not path.is_file():
        raise ModelError(f"TensorRT engine not found: {path}")
    info = read_sidecar(path) if sidecar_path(path).is_file() else None
    if info is None:
        print(f"{path}: no sidecar {sidecar_path(path).name} (not built by privacy-filter); reading the engine only")
    else:
        print(describe_engine(info, None))
    trt = import_tensorrt()
    trt_major(trt)
    if info is not None:
        check_engine_compatible(info, trt, path, gpu_name())
    _runtime, engine = deserialize(trt, path)
    io = engine_io(trt, engine)
    profile = {t.name: engine.get_tensor_profile_shape(t.name, 0) for t in io if t.is_input and -1 in t.shape}
    print(describe_engine(None, io, profile))
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from privacy_filter.models.pull import cache_dir, cached_problem
    from privacy_filter.models.registry import EMBEDDED
    from privacy_filter.models.specs import BUILTIN_SPECS

    directory = cache_dir()
    print(f"{'name':<28} {'input':<22} {'output':<10} status")
    for name, spec in BUILTIN_SPECS.items():
        size = f"{spec.height}x{spec.width} {spec.color.upper()}"
        if name in EMBEDDED:
            try:
                problem = cached_problem(directory, name)
            except Exception as exc:  # an unreadable manifest is reported, never fatal here
                problem = f"cache unreadable ({exc})"
            status = "cached" if problem is None else f"{problem}; pulled on first use"
        else:
            status = f"user-supplied: --model {name}:/path/to/model.onnx"
        print(f"{name:<28} {size:<22} {spec.output_kind:<10} {status}")
    from privacy_filter.models import detector_pull
    from privacy_filter.models.specs import DETECTOR_SPECS

    for name, dspec in DETECTOR_SPECS.items():
        size = f"long {dspec.long_side_min}-{dspec.long_side_max} {dspec.color.upper()}"
        try:
            problem = detector_pull.cached_problem(directory, detector_pull.detector_model(name))
        except Exception as exc:  # an unreadable manifest is reported, never fatal here
            problem = f"cache unreadable ({exc})"
        status = "cached" if problem is None else f"{problem}; pulled on first use"
        if problem is None:
            from privacy_filter.models.quantize import copy_dir, int8_path

            float_model = directory / detector_pull.detector_model(name).onnx_file
            made = int8_path(float_model, copy_dir(float_model)).is_file()
            status += ", with its INT8 copy for the CPU" if made else "; INT8 copy for the CPU made on first use"
        print(f"{name:<28} {size:<22} {'boxes':<10} {status}")
    print(f"cache: {directory}")
    print("custom: --model spec.yaml | pgie_config.txt | pgie_config.yml ('+soft' after a name exposes pre-ArgMax logits)")
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from privacy_filter.models.pull import pull_default_models

    if args.name == "nanodet":
        from privacy_filter.models.detector_pull import pull_detector
        from privacy_filter.models.quantize import int8_detector
        from privacy_filter.models.specs import NANODET

        path = pull_detector("nanodet", source=args.source, force=bool(args.force), progress=True)
        print(f"nanodet: {path}")
        # the CPU's INT8 copy now rather than at the first run (read-only caches, offline images)
        int8 = int8_detector(path, None, NANODET.input_name, required=False)
        if int8 is not None:
            print(f"nanodet (INT8 copy for the CPU): {int8}")
        return 0
    paths = pull_default_models(source=args.source, force=bool(args.force), progress=True)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_models_inspect(args: argparse.Namespace) -> int:
    from privacy_filter.models import onnx_tools
    from privacy_filter.models.registry import resolve_model

    resolved = resolve_model(args.model)
    io = onnx_tools.read_io(resolved.onnx_path)
    print(f"file  : {resolved.onnx_path}")
    print(f"opset : {io.opset}")
    for t in io.inputs:
        print(f"input : {t}")
    for t in io.outputs:
        print(f"output: {t}" + (f"  (from {io.producers[t.name]})" if io.producers.get(t.name) else ""))
    print(resolved.spec.describe())
    return 0
