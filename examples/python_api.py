#!/usr/bin/env python3
"""Filter a video from Python, two ways.

1. **One call** - the same resolution of preset → config → overrides as ``privacy-filter process``,
   then ``run_process``: decode, segment, effect, encode, with source timestamps and audio kept.
2. **Your own loop** - the building blocks, for code that wants each frame and its mask:
   ``Decoder`` (PyAV, I420 planes) → ``create_segmenter`` + ``FilterStage`` (fails closed) →
   ``Encoder`` (PyAV).  Frames stay YUV 4:2:0 end to end; no full-resolution RGB is made.

Run::

    python examples/python_api.py ../shared/data/videos/one-by-one-person-detection.mp4 out/ --frames 100

``--model`` takes a built-in name, an ONNX / spec YAML / DeepStream config path, or a TensorRT
``.engine`` built with ``privacy-filter engine build`` (then use ``--device cuda``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from privacy_filter.backends import create_segmenter
from privacy_filter.config import stream_config
from privacy_filter.frames import YuvFrame
from privacy_filter.io.av_sink import Encoder, EncodeSettings
from privacy_filter.io.av_source import Decoder
from privacy_filter.media import AudioPacket
from privacy_filter.pipeline import plan_from_stream_config, run_process
from privacy_filter.stage import FilterStage, StageStream


def one_call(src: str, dst: str, model: str | None, device: str, max_frames: int | None) -> None:
    overrides = {"effect": {"kind": "fill", "color": [0, 0, 0]}, "device": device}
    if model:
        overrides["model"] = model
    cfg = stream_config(src, dst, preset="cctv", overrides=overrides)  # env vars PRIVACY_FILTER_* apply too
    report = run_process(src, dst, plan_from_stream_config(cfg), progress=False, max_frames=max_frames)
    print(f"[one call] {dst}: {report.frames_out}/{report.frames_in} frames, {report.frames_covered_whole} covered whole, {report.fps:.1f} fps")


def own_loop(src: str, dst: str, model: str | None, device: str, max_frames: int | None) -> None:
    cfg = stream_config(src, dst, preset="video-call", overrides={"model": model} if model else None)
    segmenter = create_segmenter(cfg.model, device=device)
    stage = FilterStage(segmenter, {"cam": StageStream.from_config(cfg)}, device=device)
    covered_px = frames = 0
    with Decoder(src, stream_id="cam") as dec:
        info = dec.open()
        enc = Encoder(dst, info.video, EncodeSettings.from_config(cfg.output), audio=info.audio_stream)
        try:
            for item in dec:
                if isinstance(item, AudioPacket):
                    enc.write_audio(item)  # copied bit for bit (the video-call preset keeps audio)
                    continue
                assert isinstance(item, YuvFrame)
                frame = item.copy()  # decoder planes may be views into PyAV buffers; effects work in place
                result = stage.process([frame])[0]  # several streams' frames can go in one batch
                if result.frame is None:
                    continue  # on_failure: drop
                if result.mask is not None:
                    covered_px += int((result.mask > 0).sum())
                enc.write(result.frame)
                frames += 1
                if max_frames is not None and frames >= max_frames:
                    break
        finally:
            enc.close()
            stage.close()
    print(f"[own loop] {dst}: {frames} frames, mean covered share {covered_px / max(1, frames * info.video.width * info.video.height):.1%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    ap.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    args = ap.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    one_call(args.video, str(args.out_dir / "cctv.mp4"), args.model, args.device, args.frames)
    own_loop(args.video, str(args.out_dir / "video-call.mkv"), args.model, args.device, args.frames)


if __name__ == "__main__":
    main()
