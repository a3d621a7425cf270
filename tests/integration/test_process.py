"""``privacy-filter process`` end to end: real video, real model, real effects, real x264.

The cctv bar of issue 3 is checked on a 3 s stretch of one-by-one-person-detection.mp4
in which a person stands in the room (re-encoded with its original timestamps, which
start at 10 s); the whole 139 s file is the ``slow`` variant.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from privacy_filter.backends import resolve_devices
from privacy_filter.cli import main
from privacy_filter.config import stream_config
from privacy_filter.pipeline import plan_from_stream_config, run_process
from support.media_clips import cut_people_segment, has_audio, make_av_clip, read_audio_packets, read_video

VIDEO = "one-by-one-person-detection.mp4"


@pytest.fixture(scope="module")
def people_clip(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_people_segment(shared_data / "videos" / VIDEO, tmp_path_factory.mktemp("seg") / "people.mp4", 10.0, 30)


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_av_clip(tmp_path_factory.mktemp("av") / "av.mp4", frames=25)


@pytest.fixture(scope="module")
def cctv_run(people_clip: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    d = tmp_path_factory.mktemp("cctv")
    out, masks = d / "out.mp4", d / "masks"
    rc = main(["process", str(people_clip), str(out), "--preset", "cctv", "--mask-out", str(masks), "--no-progress"])
    return out, masks, rc


def covered_cells(y: np.ndarray, covered: np.ndarray, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell standard deviation of ``y`` over the origin-aligned pixelation cells lying
    wholly inside ``covered``, and how many such cells there are."""
    h, w = (y.shape[0] // cell) * cell, (y.shape[1] // cell) * cell
    cells = lambda a: a[:h, :w].reshape(h // cell, cell, w // cell, cell).swapaxes(1, 2)  # noqa: E731
    inside = cells(covered).all(axis=(2, 3))
    std = cells(y.astype(np.float32)).std(axis=(2, 3))
    return std[inside], inside


def check_cctv_bar(src: Path, out: Path, masks: Path, *, min_person_frames: int) -> None:
    t_in, y_in = read_video(src)
    t_out, y_out = read_video(out)
    assert len(t_out) == len(t_in), "one output frame per input frame"
    assert t_out == t_in, "source timestamps preserved"
    files = sorted(masks.glob("*.png"))
    assert [p.name for p in files] == [f"{i:06d}.png" for i in range(len(t_in))]
    cell = stream_config("in", "out", preset="cctv").effect.block_size(y_in[0].shape[0])
    person_frames = whole = 0
    for i, (a, b) in enumerate(zip(y_in, y_out)):
        m = cv2.imread(str(files[i]), cv2.IMREAD_UNCHANGED)
        assert m.shape == a.shape and m.dtype == np.uint8
        assert set(np.unique(m)) <= {0, 255}  # cctv: hard edge, no feather
        covered = m == 255
        if covered.all():  # covered whole on purpose (the motion layer saw a global change): no background to check
            whole += 1
            continue
        # background outside the (already dilated) mask: the input, up to x264 noise
        diff = np.abs(a.astype(np.int16) - b)[~covered]
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 10, f"frame {i}: background changed"
        std_out, inside = covered_cells(b, covered, cell)
        if inside.sum() >= 4:  # a person-sized cover (a standing person spans >= 4 whole cells)
            person_frames += 1
            std_in, _ = covered_cells(a, covered, cell)
            # hidden: each covered cell is one flat value (up to x264 noise), the input was not
            assert np.median(std_out) < 1.5 and std_out.max() < 6, f"frame {i}: covered cells not flat"
            if np.median(std_in) > 6:
                assert np.median(std_out) < 0.25 * np.median(std_in)
    assert person_frames >= min_person_frames
    assert whole <= 0.02 * len(t_in), f"{whole} of {len(t_in)} frames covered whole"


def test_cctv_bar_on_a_stretch_with_a_person(cctv_run: tuple[Path, Path, int], people_clip: Path) -> None:
    out, masks, rc = cctv_run
    assert rc == 0
    check_cctv_bar(people_clip, out, masks, min_person_frames=25)
    assert not has_audio(out)


@pytest.mark.slow
def test_cctv_bar_on_the_whole_video(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "videos" / VIDEO
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    assert main(["process", str(src), str(out), "--preset", "cctv", "--mask-out", str(masks), "--no-progress"]) == 0
    check_cctv_bar(src, out, masks, min_person_frames=600)


def test_video_call_copies_audio_bit_identical_and_cctv_drops_it(av_clip: Path, tmp_path: Path) -> None:
    call, cctv = tmp_path / "call.mp4", tmp_path / "cctv.mp4"
    assert main(["process", str(av_clip), str(call), "--preset", "video-call", "--no-progress"]) == 0
    assert main(["process", str(av_clip), str(cctv), "--preset", "cctv", "--no-progress"]) == 0
    assert read_audio_packets(call) == read_audio_packets(av_clip)
    assert has_audio(av_clip) and not has_audio(cctv)
    assert read_video(call)[0] == read_video(av_clip)[0] == read_video(cctv)[0]


def test_frames_batched_between_detector_runs_keep_every_frame_timestamp_and_audio_packet(av_clip: Path, tmp_path: Path) -> None:
    """Detector on every 3rd frame of a file: frames go to the engine 3 at a time (the last call
    short: 25 frames) with the audio packets read meanwhile waiting with them; nothing is lost,
    reordered or left behind at the end."""
    out = tmp_path / "out.mp4"
    plan = plan_for("cctv", detector={"name": "nanodet", "every": 3}, output={"audio": "copy"})
    report = run_process(str(av_clip), str(out), plan, progress=False)
    assert (report.frames_in, report.frames_out, report.frames_dropped) == (25, 25, 0)
    assert read_video(out)[0] == read_video(av_clip)[0]
    assert read_audio_packets(out) == read_audio_packets(av_clip)


def test_process_masks_hide_every_person_with_boxes_moved_between_detector_runs(shared_data: Path, tmp_path: Path) -> None:
    """TUD-Campus (25 fps: the detector on every 2nd frame, frames batched in pairs): the masks
    ``process`` itself applies, scored with the per-person metric, meet the bars."""
    from privacy_filter.coverage import evaluate_coverage, read_boxes_csv

    clip = shared_data / "cctv" / "tud_campus"
    masks = tmp_path / "masks"
    rc = main(["process", str(clip / "video.mp4"), str(tmp_path / "out.mp4"), "--preset", "cctv", "--mask-out", str(masks), "--no-progress"])
    assert rc == 0
    files = sorted(masks.glob("*.png"))
    assert len(files) == 71
    r = evaluate_coverage([cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in files], read_boxes_csv(clip / "gt.csv"))
    assert r.hidden >= 0.98 and r.never_exposed >= 0.90 and r.false_cover <= 0.10, r


class Raising:
    def infer_yuv(self, frames):  # noqa: ANN001, ANN201
        raise RuntimeError("engine crashed")


def plan_for(preset: str, **overrides):  # noqa: ANN003, ANN201
    return plan_from_stream_config(stream_config("in", "out", preset=preset, overrides=overrides))


def test_failing_engine_end_to_end_every_published_frame_covered(people_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "fail.mp4"
    plan = plan_for("cctv", effect={"kind": "fill"})
    rep = run_process(str(people_clip), str(out), plan, segmenter=Raising(), progress=False)
    assert rep.frames_out == rep.frames_in == rep.frames_covered_whole == 30
    times, ys = read_video(out)
    assert len(ys) == 30
    for y in ys:  # solid black (Y=16) everywhere, up to codec noise
        assert np.abs(y.astype(int) - 16).max() <= 3


class Blank:
    """A segmenter that finds nobody: every frame reaches the effect with an empty map."""

    def infer_yuv(self, frames):  # noqa: ANN001, ANN201
        return [np.zeros((f.height, f.width), np.float32) for f in frames]


class DeviceDiesAt:
    """An effect whose device context is lost at the ``n``-th frame (a sticky CUDA error)."""

    def __init__(self, n: int) -> None:
        self.n, self.calls = n, 0

    def apply(self, frame, prob):  # noqa: ANN001, ANN201
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("cudaErrorIllegalAddress: an illegal memory access was encountered")
        return np.zeros((frame.height, frame.width), np.uint8)

    def cover_whole(self, frame):  # noqa: ANN001, ANN201
        raise AssertionError("a lost device must end the run, not cover and carry on")


@pytest.mark.parametrize("preset", ["cctv", "video-call"])
def test_a_lost_device_in_the_effect_ends_the_run_with_its_error(people_clip: Path, tmp_path: Path, preset: str) -> None:
    """The effect runs on the drawer thread (decode → stage → effect → encode): an error that must
    end the run reaches the caller by name, every thread stops (no hang), and the output is closed
    with the frames written before it."""
    out = tmp_path / "lost.mp4"
    plan = plan_for(preset)
    effect = DeviceDiesAt(8)
    result: dict[str, BaseException] = {}

    def run() -> None:
        try:
            run_process(str(people_clip), str(out), plan, segmenter=Blank(), effects={plan.stream_id: effect}, progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "run_process hung after the effect's error"
    err = result.get("error")
    assert err is not None and type(err).__name__ == "DeviceLost" and "cudaErrorIllegalAddress" in str(err), err
    assert effect.calls < 30  # stopped at the error, not after the clip
    frames = read_video(out)[0]
    assert 0 < len(frames) < 8  # what was encoded before the error, in a playable file


def test_failing_engine_with_drop_publishes_no_frames(people_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "drop.mkv"
    plan = plan_for("cctv", on_failure="drop")
    rep = run_process(str(people_clip), str(out), plan, segmenter=Raising(), progress=False)
    assert rep.frames_in == 30 and rep.frames_dropped == 30 and rep.frames_out == 0
    assert out.exists()  # header only: FFmpeg refuses a container with no packets, and that is all
    try:
        frames = read_video(out)[0]
    except (av.error.EOFError, av.error.InvalidDataError):
        frames = []
    assert frames == []


def test_failing_engine_with_explicit_pass_publishes_the_input(people_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "pass.mp4"
    plan = plan_for("cctv", on_failure="pass")
    rep = run_process(str(people_clip), str(out), plan, segmenter=Raising(), progress=False)
    assert rep.frames_out == 30 and rep.frames_covered_whole == 0 and rep.frames_passed_unfiltered == 30
    _, a = read_video(people_clip)
    _, b = read_video(out)
    assert max(np.abs(x.astype(int) - y).mean() for x, y in zip(a, b)) < 2.0


def test_live_policy_drops_stale_frames_and_counts_them() -> None:
    class Slow:
        def infer_yuv(self, frames):  # noqa: ANN001, ANN201
            time.sleep(0.03)
            return [np.zeros((16, 16), np.float32) for _ in frames]

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        plan = plan_for("cctv")
        plan.policy = "live"
        rep = run_process("lavfi:testsrc2=size=320x180:rate=100:duration=2", f"{d}/live.mkv", plan, segmenter=Slow(), progress=False)
        times, _ = read_video(Path(d) / "live.mkv")
    assert rep.frames_in == 200
    assert rep.stale_dropped > 0 and rep.frames_dropped == rep.stale_dropped
    assert rep.frames_out + rep.stale_dropped == rep.frames_in
    assert len(times) == rep.frames_out
    assert times == sorted(set(times)), "kept frames keep their own, increasing timestamps"


def test_mask_out_with_video_call_preset_is_soft(av_clip: Path, tmp_path: Path) -> None:
    masks = tmp_path / "m"
    assert main(["process", str(av_clip), str(tmp_path / "o.mkv"), "--preset", "video-call", "--mask-out", str(masks), "--no-progress"]) == 0
    files = sorted(masks.iterdir())
    assert len(files) == 25
    m = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert m.shape == (240, 320)  # frame size
    # no person in a synthetic ramp: target background → everything covered
    assert (m == 255).mean() > 0.99


def test_cli_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str], av_clip: Path) -> None:
    assert main(["process", str(tmp_path / "missing.mp4"), str(tmp_path / "o.mp4"), "--no-progress"]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(5000))
    assert main(["process", str(bad), str(tmp_path / "o.mp4"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "corrupt.mp4" in err and "Traceback" not in err
    assert main(["process", str(av_clip), str(tmp_path / "nodir" / "o.mp4"), "--no-progress"]) == 2
    assert "nodir" in capsys.readouterr().err


def resolve_device(device: str) -> str:
    """The effects device ``process`` resolves for ``device`` (with its one log line)."""
    return resolve_devices(device, segmentation=False).effects


def test_device_auto_falls_back_to_cpu_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    """On this machine (no usable GPU) the one log line names the real reason, e.g. the driver error."""
    from privacy_filter.gpu.effects import cuda_unavailable_reason

    reason = cuda_unavailable_reason()
    if reason is None:
        pytest.skip("CUDA can run here, so --device auto does not fall back")
    with caplog.at_level(logging.WARNING, logger="privacy_filter.backends"):
        assert resolve_device("auto") == "cpu"
    lines = [r.getMessage() for r in caplog.records if r.name == "privacy_filter.backends"]
    assert lines == [f"effects device: cpu (auto: CUDA unavailable: {reason})"]


def test_device_auto_follows_the_cuda_backends_verdict(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """auto asks effects.cuda.cuda_unavailable_reason (device, driver and NVRTC), nothing else."""
    from privacy_filter.gpu import effects as cuda

    monkeypatch.setattr(cuda, "cuda_unavailable_reason", lambda: "cudaErrorNoDevice")
    with caplog.at_level(logging.WARNING, logger="privacy_filter.backends"):
        assert resolve_device("auto") == "cpu"
    assert "effects device: cpu (auto: CUDA unavailable: cudaErrorNoDevice)" in caplog.text
    monkeypatch.setattr(cuda, "cuda_unavailable_reason", lambda: None)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda") == "cuda"


def test_device_flag_beats_config_and_env_even_when_it_is_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from privacy_filter.cli import build_parser
    from privacy_filter.cli.commands import build_plan

    cfg = tmp_path / "gpu.yaml"
    cfg.write_text("defaults: {device: cuda}\n")

    def device(*flags: str) -> str:
        return build_plan(build_parser().parse_args(["process", "in.mp4", "out.mp4", *flags])).device

    assert device() == "cpu"  # the documented default
    assert device("--config", str(cfg)) == "cuda"  # an unset flag leaves the config's device alone
    assert device("--config", str(cfg), "--device", "cpu") == "cpu"
    monkeypatch.setenv("PRIVACY_FILTER_DEFAULTS__DEVICE", "auto")
    assert device() == "auto" and device("--device", "cpu") == "cpu"


def test_live_reader_evicts_the_oldest_frame_keeps_audio_order_and_never_spins() -> None:
    import queue
    import threading
    from fractions import Fraction

    from privacy_filter.frames import YuvFrame
    from privacy_filter.media import AudioPacket
    from privacy_filter.pipeline import _Reader

    def audio(n: int) -> AudioPacket:
        return AudioPacket(b"x", n, n, 1, Fraction(1, 48000))

    def frame(n: int) -> YuvFrame:
        y, u, v = np.zeros((4, 4), np.uint8), np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint8)
        return YuvFrame(y, u, v, index=n, stream_id="0", pts=n, time_base=Fraction(1, 25))

    q: queue.Queue = queue.Queue(maxsize=3)
    reader = _Reader(None, q, True, None, "0")  # type: ignore[arg-type]  # put() uses neither
    for item in (audio(0), frame(0), audio(1)):
        q.put(item)
    reader.put(frame(1))  # full: the stale frame goes, the audio keeps its order
    got = [q.get() for _ in range(3)]
    assert [(type(x).__name__, x.pts) for x in got] == [("AudioPacket", 0), ("AudioPacket", 1), ("YuvFrame", 1)]
    assert reader.stale_dropped == 1
    # a queue of nothing but audio: the frame waits for room (no spinning) and a stop ends the wait
    for n in range(3):
        q.put(audio(n))
    t = threading.Thread(target=reader.put, args=(frame(2),))
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and q.qsize() == 3
    reader.stop.set()
    t.join(timeout=5)
    assert not t.is_alive() and [q.get().pts for _ in range(3)] == [0, 1, 2]


def _ts_segment(path: Path, size: tuple[int, int], first_pts: int, frames: int = 25) -> None:
    """An H.264 MPEG-TS piece of ``frames`` moving pictures at ``size``, pts from ``first_pts`` (1/25 s)."""
    from fractions import Fraction

    with av.open(str(path), "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.codec_context.time_base = Fraction(1, 25)
        yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
        for i in range(frames):
            rgb = np.stack([(xx + 4 * i) % 256, (yy * 2) % 256, np.full_like(xx, 90)], axis=-1).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            f.pts, f.time_base = first_pts + i, Fraction(1, 25)
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def test_a_picture_size_change_mid_stream_is_scaled_to_the_first_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Spliced pieces (or a camera switching resolution): 25 frames at 320×240, then 25 at
    160×120. Every frame comes out, at 320×240, with its timestamp, and the change is counted
    in the summary instead of failing the stream."""
    a, b, src = tmp_path / "a.ts", tmp_path / "b.ts", tmp_path / "spliced.ts"
    _ts_segment(a, (320, 240), 0)
    _ts_segment(b, (160, 120), 30)  # starts after the first piece's last (delayed) timestamp
    src.write_bytes(a.read_bytes() + b.read_bytes())
    with av.open(str(src)) as c:
        sizes = [(f.width, f.height) for f in c.decode(video=0)]
    assert sizes == [(320, 240)] * 25 + [(160, 120)] * 25
    out = tmp_path / "out.mkv"
    assert main(["process", str(src), str(out), "--effect", "none", "--no-progress"]) == 0
    assert "25 frames of another size scaled to the first's" in capsys.readouterr().out
    t_in, _ = read_video(src)
    t_out, y_out = read_video(out)
    with av.open(str(out)) as c:
        assert {(f.width, f.height) for f in c.decode(video=0)} == {(320, 240)}
    assert len(t_out) == 50 and t_out == t_in and t_in == sorted(set(t_in))
    # the small pictures were scaled up, not padded: their content fills the frame
    with av.open(str(b)) as c:
        small = next(c.decode(video=0)).to_ndarray(format="yuv420p")[:120]
    big = cv2.resize(small, (320, 240), interpolation=cv2.INTER_LINEAR)
    assert np.abs(y_out[25].astype(np.int32) - big).mean() < 6
