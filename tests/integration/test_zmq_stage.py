"""privacy-filter as a stage of an existing ZeroMQ pipeline (product use #3), end to end.

Real sockets, the real default model, real frames from one-by-one-person-detection.mp4
(a person stands in the room from ~10 s): an upstream producer thread sends native
protocol frames with user metadata and irregular timestamps, privacy-filter filters them
(``process`` in a subprocess, and one ``run`` service stream), and a downstream consumer
checks that every frame arrives once with its seq/pts/time base/metadata, a mask of the
frame's geometry, and pixels changed exactly where the mask says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import zmq

from privacy_filter import wire as P
from privacy_filter.config import StreamConfig, stream_config
from privacy_filter.errors import ConfigError
from privacy_filter.frames import YuvFrame, plane_view
from privacy_filter.pipeline import plan_from_stream_config, run_process
from privacy_filter.urls import parse_zmq_url
from support.media_clips import cut_people_segment, read_video

N = 24
TB = Fraction(1, 30000)
UPSTREAM = "cam-7"
FILL_Y = 16  # effect fill, colour (0, 0, 0), BT.601 limited range
AUDIO = {"codec": "aac", "rate": 48000, "channels": 1, "layout": "mono", "format": None, "time_base": [1, 48000], "extradata": None, "bit_rate": 64000}


def _pts(k: int) -> int:
    return 7 + 3001 * k + (k % 3) * 11  # irregular steps, not starting at 0


def _meta(k: int) -> dict[str, Any]:
    return {"camera": "entrance", "k": k, "tags": ["a", "ü"], "nested": {"x": 1.5, "none": None}}


@pytest.fixture(scope="module")
def frames(shared_data: Path) -> list[YuvFrame]:
    """N consecutive real frames from 10 s on (a person in view), as upstream would send them."""
    out: list[YuvFrame] = []
    with av.open(str(shared_data / "videos/one-by-one-person-detection.mp4")) as c:
        for f in c.decode(video=0):
            if f.time < 10.0:
                continue
            g = f.reformat(format="yuv420p")
            y, u, v = (plane_view(p).copy() for p in g.planes[:3])
            k = len(out)
            out.append(YuvFrame(y, u, v, pts=_pts(k), time_base=TB, index=k, stream_id=UPSTREAM, metadata=_meta(k)))
            if len(out) == N:
                break
    return out


def produce(endpoint: str, frames: list[YuvFrame], *, audio: bool = True, malformed: bool = True) -> None:
    """The upstream stage: stream-start, frames (+ audio, + two malformed messages), eos."""
    ctx = zmq.Context()
    s = P.socket(ctx, zmq.PUSH, endpoint, bind=False, linger_ms=10000)
    f0 = frames[0]
    P.send(
        s,
        P.stream_start_parts(
            UPSTREAM, video={"width": f0.width, "height": f0.height, "time_base": [TB.numerator, TB.denominator], "rate": [10, 1]}, audio=AUDIO if audio else None
        ),
    )
    for k, f in enumerate(frames):
        P.send(s, P.frame_parts(f))
        if audio and k % 6 == 0:
            P.send(s, P.audio_parts(UPSTREAM, k // 6, bytes([k, 1, 2, 3]) * 50, pts=k * 4800, dts=k * 4800, time_base=Fraction(1, 48000), duration=1024))
        if malformed and k == 5:
            s.send_multipart([b"{not json", b"x"])
            bad = P.frame_parts(f)
            s.send_multipart([bad[0], bytes(bad[1])[:-100], bytes(bad[2]), bytes(bad[3])])  # Y plane too short
    P.send(s, P.eos_parts(UPSTREAM, frames=len(frames)))
    s.close()
    ctx.term()


class Consumer(threading.Thread):
    """The next stage: collects every message (frames copied out of their buffers) until eos."""

    def __init__(self, endpoint: str, kind: int = zmq.PULL, bind: bool = True) -> None:
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.rx = P.Receiver(P.socket(self.ctx, kind, endpoint, bind=bind))
        self.msgs: list[P.Message] = []
        self.frames: list[tuple[P.Message, YuvFrame, np.ndarray | None]] = []
        self.eos: P.Message | None = None

    def run(self) -> None:
        while True:
            m = self.rx.recv(timeout_ms=90_000)
            if m is None:
                break
            self.msgs.append(m)
            if m.kind == "frame":
                assert m.frame is not None
                self.frames.append((m, m.frame.copy(), None if m.mask is None else m.mask.copy()))
            if m.kind == "eos":
                self.eos = m
                break
        self.rx.sock.close(linger=0)
        self.ctx.term()


def _chroma_clear(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    m = np.pad(mask, ((0, h & 1), (0, w & 1)), mode="edge")
    return m.reshape(m.shape[0] // 2, 2, m.shape[1] // 2, 2).max(axis=(1, 3)) == 0


def check_filtered(frames: list[YuvFrame], got: Consumer, stream: str, *, audio: bool) -> None:
    """Every frame once, same seq/pts/time base/meta; mask of the frame's size; fill exactly where mask = 255."""
    assert got.eos is not None, "no eos"
    assert got.eos.stream_id == stream and got.eos.header["frames"] == len(frames) and got.eos.header["reason"] == "end"
    assert got.msgs[0].kind == "stream-start" and got.msgs[0].stream_id == stream
    assert got.msgs[0].header["video"]["width"] == frames[0].width
    assert len(got.frames) == len(frames)
    person_frames = 0
    for src, (m, f, mask) in zip(frames, got.frames):
        assert m.stream_id == stream
        assert (m.seq, f.pts, f.time_base, f.metadata) == (src.index, src.pts, src.time_base, src.metadata)
        assert mask is not None and mask.shape == (src.height, src.width) and m.header["has_mask"]
        assert set(np.unique(mask)) <= {0, 255}
        covered = mask == 255
        assert np.array_equal(f.y[~covered], src.y[~covered]), f"frame {m.seq}: pixels outside the mask changed"
        assert (f.y[covered] == FILL_Y).all(), f"frame {m.seq}: covered pixels not filled"
        clear = _chroma_clear(mask)  # chroma samples whose whole 2x2 luma block is uncovered
        assert np.array_equal(f.u[clear], src.u[clear]) and np.array_equal(f.v[clear], src.v[clear])
        share = covered.mean()
        if 0.01 < share < 0.6:
            person_frames += 1
            assert (src.y[covered] != FILL_Y).mean() > 0.5  # the fill really changed what was there
    assert person_frames >= len(frames) // 2, f"a person was found in only {person_frames} frames"
    audio_in = [m for m in got.msgs if m.kind == "audio"]
    if audio:
        assert [bytes(m.payload) for m in audio_in] == [bytes([k, 1, 2, 3]) * 50 for k in range(0, N, 6)]
        assert [m.header["pts"] for m in audio_in] == [k * 4800 for k in range(0, N, 6)]
        assert got.msgs[0].header["audio"]["codec"] == "aac"
    else:
        assert audio_in == [] and got.msgs[0].header["audio"] is None


# --------------------------------------------------------------------------- process


def test_process_zmq_to_zmq_stage(frames: list[YuvFrame], tmp_path: Path) -> None:
    ep_in, ep_out = f"ipc://{tmp_path}/in.sock", f"ipc://{tmp_path}/out.sock"
    got = Consumer(ep_out)
    got.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "privacy_filter.cli", "process", f"zmq+pull://{ep_in}", f"zmq+push://{ep_out}", "--effect", "fill", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    produce(ep_in, frames)
    out, err = proc.communicate(timeout=120)
    got.join(10)
    assert proc.returncode == 0, err[-2000:]
    assert f"{N} frames out of {N} in" in out and "2 malformed messages dropped" in out, out
    assert "dropping malformed message" in err  # logged once per kind
    check_filtered(frames, got, UPSTREAM, audio=True)


def test_process_zmq_to_file_keeps_timestamps(frames: list[YuvFrame], tmp_path: Path) -> None:
    ep_in = f"ipc://{tmp_path}/in.sock"
    out = tmp_path / "out.mp4"
    plan = plan_from_stream_config(stream_config(f"zmq+pull://{ep_in}", str(out), overrides={"effect": {"kind": "fill"}, "output": {"audio": "drop"}}))
    t = threading.Thread(target=produce, args=(ep_in, frames[:10]), kwargs={"audio": False}, daemon=True)
    t.start()
    report = run_process(f"zmq+pull://{ep_in}", str(out), plan, progress=False)
    t.join(10)
    assert report.frames_out == 10 and report.bad_messages == 2
    times, _ = read_video(out)
    # every frame at its upstream time; the MP4 muxer moves the first frame to 0 (a container matter)
    assert [t - times[0] for t in times] == [Fraction(f.pts - frames[0].pts) * TB for f in frames[:10]]


def test_file_to_zmq_pub_with_a_sub_observer(shared_data: Path, tmp_path: Path) -> None:
    clip = cut_people_segment(shared_data / "videos/one-by-one-person-detection.mp4", tmp_path / "people.mp4", 10.0, 12)
    ep = f"ipc://{tmp_path}/pub.sock"
    got = Consumer(ep, zmq.SUB, bind=False)
    got.start()
    plan = plan_from_stream_config(stream_config(str(clip), f"zmq+pub://{ep}", overrides={"effect": {"kind": "fill"}}))
    report = run_process(str(clip), f"zmq+pub://{ep}", plan, progress=False)
    got.join(30)
    assert report.frames_out == 12
    times, ys = read_video(clip)
    assert got.eos is not None and got.eos.header["frames"] == 12
    # PUB never waits for a subscriber; this one keeps up, so it sees every frame, in order, each with its mask
    seen = [(m.seq, Fraction(f.pts) * f.time_base) for m, f, _ in got.frames]
    assert seen == [(i, t) for i, t in enumerate(times)]
    for (m, f, mask), y in zip(got.frames, ys):
        assert mask is not None and mask.shape == y.shape
        assert np.array_equal(f.y[mask == 0], y[mask == 0]) and (f.y[mask == 255] == FILL_Y).all()


# --------------------------------------------------------------------------- service


def test_service_stream_zmq_to_zmq(frames: list[YuvFrame], tmp_path: Path) -> None:
    ep_in, ep_out = f"ipc://{tmp_path}/svc-in.sock", f"ipc://{tmp_path}/svc-out.sock"
    cfg = {
        "streams": [{"id": "lobby", "source": f"zmq+pull://{ep_in}", "output": {"url": f"zmq+push://{ep_out}", "audio": "drop"}, "effect": {"kind": "fill"}, "deadline_ms": 60000}],
        "metrics": {"dump": str(tmp_path / "metrics.json")},
    }
    (tmp_path / "svc.yaml").write_text(json.dumps(cfg))
    got = Consumer(ep_out)
    got.start()
    proc = subprocess.Popen([sys.executable, "-m", "privacy_filter.cli", "run", str(tmp_path / "svc.yaml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    produce(ep_in, frames)
    _, err = proc.communicate(timeout=120)
    got.join(10)
    assert proc.returncode == 0, err[-3000:]
    check_filtered(frames, got, "lobby", audio=False)
    metrics = json.loads((tmp_path / "metrics.json").read_text())["lobby"]
    assert metrics["frames_out"] == N and metrics["frames_covered_whole"] == 0
    assert (metrics["bad_messages:json"], metrics["bad_messages:size"]) == (1, 1), metrics


# --------------------------------------------------------------------------- URLs and config


@pytest.mark.parametrize(
    ("url", "role", "bind", "endpoint"),
    [
        ("zmq+pull://tcp://*:5555", "source", True, "tcp://*:5555"),
        ("zmq+pull://0.0.0.0:5555", "source", True, "tcp://0.0.0.0:5555"),
        ("zmq+sub://camera-host:5556", "source", False, "tcp://camera-host:5556"),
        ("zmq+pull+connect://tcp://upstream:5555", "source", False, "tcp://upstream:5555"),
        ("zmq+push://ipc:///run/next.sock", "output", False, "ipc:///run/next.sock"),
        ("zmq+push+bind://tcp://*:5557", "output", True, "tcp://*:5557"),
        ("zmq+pub://tcp://*:5558", "output", True, "tcp://*:5558"),
    ],
)
def test_url_syntax(url: str, role: str, bind: bool, endpoint: str) -> None:
    z = parse_zmq_url(url, role)
    assert (z.bind, z.endpoint) == (bind, endpoint)


@pytest.mark.parametrize(
    ("url", "role", "needle"),
    [
        ("zmq+push://tcp://h:1", "source", "zmq+push is an output pattern"),
        ("zmq+pull://tcp://*:1", "output", "zmq+pull is a source pattern"),
        ("zmq+pair://tcp://h:1", "source", "zmq+pull://, zmq+sub://"),
        ("zmq+pull+maybe://tcp://h:1", "source", "must be 'bind' or 'connect'"),
        ("zmq+pull://udp://h:1", "source", "transport 'udp'"),
        ("zmq+push://tcp://*:1", "output", "cannot connect"),
        ("zmq+push://nohost", "output", "neither a ZeroMQ endpoint"),
    ],
)
def test_bad_urls_name_the_problem(url: str, role: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as e:
        parse_zmq_url(url, role)
    assert needle in str(e.value)


def test_config_validates_zmq_urls_and_policy() -> None:
    with pytest.raises(ConfigError, match="zmq\\+push is an output pattern"):
        stream_config("zmq+push://tcp://h:1", "out.mkv")
    assert not StreamConfig(id="a", source="zmq+pull://tcp://*:1").is_live()  # backpressure, like a file
    assert StreamConfig(id="a", source="zmq+sub://h:1").is_live()
    sc = stream_config("in.mp4", "zmq+pub://tcp://*:1")
    assert sc.output.mask is True


class _BrokenEngine:
    """An engine whose every call fails, as a crashed GPU or a corrupt model would."""

    def infer_yuv(self, frames: list[YuvFrame]) -> list[np.ndarray]:
        raise RuntimeError("engine down")


@pytest.mark.parametrize("on_failure", ["cover", "pass"])
def test_zmq_output_fails_closed_unless_pass(frames: list[YuvFrame], tmp_path: Path, on_failure: str) -> None:
    """With a failing engine, frames leave covered whole with an all-255 mask; only ``pass`` sends them unfiltered, maskless."""
    ep_in, ep_out = f"ipc://{tmp_path}/in.sock", f"ipc://{tmp_path}/out.sock"
    got = Consumer(ep_out)
    got.start()
    cfg = stream_config(f"zmq+pull://{ep_in}", f"zmq+push://{ep_out}", overrides={"effect": {"kind": "fill"}, "on_failure": on_failure})
    t = threading.Thread(target=produce, args=(ep_in, frames[:6]), kwargs={"audio": False, "malformed": False}, daemon=True)
    t.start()
    report = run_process(cfg.source.url, cfg.output.url, plan_from_stream_config(cfg), segmenter=_BrokenEngine(), progress=False)
    t.join(10)
    got.join(30)
    assert report.frames_out == 6 and got.eos is not None and len(got.frames) == 6
    for src, (m, f, mask) in zip(frames, got.frames):
        if on_failure == "cover":
            assert m.header["has_mask"] and (mask == 255).all() and (f.y == FILL_Y).all()
        else:
            assert not m.header["has_mask"] and mask is None and np.array_equal(f.y, src.y)


def test_process_taps_a_publisher_with_zmq_sub(frames: list[YuvFrame], tmp_path: Path) -> None:
    """zmq+sub (live): privacy-filter subscribes to an upstream PUB; paced frames all arrive, filtered, then eos."""
    ep_pub, ep_out = f"ipc://{tmp_path}/pub.sock", f"ipc://{tmp_path}/out.sock"
    ctx = zmq.Context()
    pub = ctx.socket(zmq.XPUB)  # XPUB hears the subscription, so nothing is sent before privacy-filter listens
    pub.bind(ep_pub)
    got = Consumer(ep_out)
    got.start()
    cfg = stream_config(f"zmq+sub://{ep_pub}", f"zmq+push://{ep_out}", overrides={"effect": {"kind": "fill"}})
    assert cfg.is_live()
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(r=run_process(cfg.source.url, cfg.output.url, plan_from_stream_config(cfg), progress=False)), daemon=True)
    t.start()
    assert pub.poll(30_000, zmq.POLLIN), "privacy-filter never subscribed"
    pub.recv()
    f0 = frames[0]
    P.send(pub, P.stream_start_parts(UPSTREAM, video={"width": f0.width, "height": f0.height, "time_base": [TB.numerator, TB.denominator], "rate": None}))
    for f in frames[:8]:
        P.send(pub, P.frame_parts(f))
        time.sleep(0.15)  # a camera's pace: the stage keeps up, so a live source drops nothing
    P.send(pub, P.eos_parts(UPSTREAM, frames=8))
    t.join(60)
    got.join(30)
    pub.close(linger=0)
    ctx.term()
    assert result["r"].frames_out == 8 and len(got.frames) == 8 and got.eos is not None
    for src, (m, f, mask) in zip(frames, got.frames):
        assert (m.seq, f.pts, f.metadata) == (src.index, src.pts, src.metadata) and mask is not None
        assert np.array_equal(f.y[mask == 0], src.y[mask == 0]) and (f.y[mask == 255] == FILL_Y).all()
