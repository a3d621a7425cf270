"""Decode and encode workers with real PyAV: frame counts, timestamps, audio bytes, sinks, errors."""

from __future__ import annotations

import socket
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from privacy_filter.errors import SourceError
from privacy_filter.frames import YuvFrame
from privacy_filter.io.av_sink import Encoder, EncodeSettings, SinkError
from privacy_filter.io.av_source import Decoder, ReconnectPolicy, decode_threads, native_frame
from privacy_filter.media import AudioPacket
from privacy_filter.urls import is_live_source
from support.media_clips import has_audio, make_av_clip, read_audio_packets, read_video


@pytest.fixture(scope="module")
def av_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_av_clip(tmp_path_factory.mktemp("clips") / "av.mp4")


def transcode(src: str | Path, dst: str | Path, audio: object = "template", **settings: object) -> Encoder:
    """Decoder → Encoder with no filtering; ``audio``: 'template', 'info' or None."""
    dec = Decoder(str(src))
    info = dec.open()
    a = {"template": info.audio_stream, "info": info.audio, None: None}[audio]  # type: ignore[index]
    enc = Encoder(str(dst), info.video, EncodeSettings(**{"preset": "ultrafast", **settings}), audio=a)
    for item in dec:
        if isinstance(item, AudioPacket):
            enc.write_audio(item)
        else:
            enc.write(item)
    enc.close()
    dec.close()
    return enc


@pytest.mark.parametrize("ext", ["mp4", "mkv", "mov", "ts"])
def test_round_trip_keeps_every_frame_and_its_timestamp(av_clip: Path, tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"out.{ext}"
    enc = transcode(av_clip, out)
    t_in, _ = read_video(av_clip)
    t_out, _ = read_video(out)
    assert enc.frames_out == len(t_in) == 50
    assert len(t_out) == len(t_in)
    if ext == "mp4":  # MP4 stores the AAC priming as a negative audio time: video times exact
        assert t_out == t_in
    # Matroska cannot store the audio's negative start and MPEG-TS adds its mux delay: the
    # container shifts the whole timeline (audio with it, so sync holds); spacing stays exact.
    shift = t_out[0] - t_in[0]
    assert [t - shift for t in t_out] == t_in
    assert 0 <= shift <= Fraction(3, 2)
    # Without audio nothing forces a shift, except TS's constant mux delay.
    out2 = tmp_path / f"video-only.{ext}"
    transcode(av_clip, out2, audio=None)
    t2, _ = read_video(out2)
    assert t2 == t_in or (ext == "ts" and [t - t2[0] for t in t2] == t_in)


def test_audio_copy_is_bit_identical_from_template_and_from_plain_info(av_clip: Path, tmp_path: Path) -> None:
    src = read_audio_packets(av_clip)
    assert len(src) > 50
    for mode in ("template", "info"):  # info: the cross-process path (AudioInfo, no PyAV objects)
        out = tmp_path / f"{mode}.mp4"
        enc = transcode(av_clip, out, audio=mode)
        assert enc.audio_packets_out == len(src)
        assert read_audio_packets(out) == src, mode


def test_audio_drop_writes_no_audio_stream(av_clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "drop.mp4"
    dec = Decoder(str(av_clip))
    info = dec.open()
    enc = Encoder(str(out), info.video, EncodeSettings(preset="ultrafast", audio="drop"), audio=info.audio_stream)
    for item in dec:
        (enc.write_audio if isinstance(item, AudioPacket) else enc.write)(item)
    enc.close()
    assert has_audio(av_clip) and not has_audio(out)
    assert enc.audio_packets_out == 0 and enc.frames_out == 50


def test_gif_variable_frame_timing_survives(shared_data: Path, tmp_path: Path) -> None:
    gif = shared_data / "videos" / "classroom.gif"
    out = tmp_path / "gif.mp4"
    transcode(gif, out, audio=None)
    t_in, _ = read_video(gif)
    t_out, _ = read_video(out)
    assert len(set(np.diff([float(t) for t in t_in]).round(3))) > 1, "the GIF should be variable-rate"
    assert t_out == t_in


@pytest.mark.parametrize("low_memory", [False, True], ids=["fresh-copies", "picture-pool"])
def test_decoded_planes_are_writable_views_that_do_not_corrupt_later_frames(shared_data: Path, low_memory: bool) -> None:
    """H.264 keeps decoded pictures as references: drawing on one must not leak into the next."""
    src = shared_data / "videos" / "one-by-one-person-detection.mp4"

    def first_frames(draw: bool) -> list[np.ndarray]:
        out = []
        with Decoder(str(src), low_memory=low_memory) as dec:
            for item in dec:
                out.append(item.y.copy())
                nf = native_frame(item)
                assert nf is not None and np.shares_memory(item.y, np.frombuffer(nf.planes[0], np.uint8))
                if draw:
                    item.y[...] = 0
                    item.u[...] = 0
                if len(out) == 25:
                    return out
        return out

    clean, drawn = first_frames(False), first_frames(True)
    for a, b in zip(clean, drawn):
        np.testing.assert_array_equal(a, b)


def test_picture_pool_gives_the_decoded_pixels_and_never_a_picture_still_in_use(shared_data: Path) -> None:
    """``low_memory`` (output.low_memory) copies into pooled pictures: every frame must carry
    the decoder's pixels and timing, a picture must not be reused while any frame or plane view
    of it lives (held frames keep their pixels), and released pictures must be reused."""
    src = shared_data / "videos" / "one-by-one-person-detection.mp4"
    with Decoder(str(src), audio=False) as plain:
        expected = [(f.pts, f.y.copy(), f.u.copy(), f.v.copy()) for f, _ in zip(plain, range(40))]
    with Decoder(str(src), audio=False, low_memory=True) as dec:
        held: list[YuvFrame] = []
        views: list[np.ndarray] = []
        for i, f in enumerate(dec):
            pts, y, u, v = expected[i]
            assert f.pts == pts
            np.testing.assert_array_equal(f.y, y)
            np.testing.assert_array_equal(f.u, u)
            np.testing.assert_array_equal(f.v, v)
            f.y[::7] = 255  # the effect draws in place: it must reach no other frame
            if i < 10:
                held.append(f)  # a whole frame kept (a queue, a group waiting for the detector)
            elif i < 20:
                views.append(f.u[4:40, 8:64])  # only a slice of one plane kept
            if i == 39:
                break
            del f
        pool = len(dec._pictures)  # type: ignore[arg-type]
    # the held frames and views still show what was decoded into them (plus their own drawing)
    for i, f in enumerate(held):
        mark = expected[i][1].copy()
        mark[::7] = 255
        np.testing.assert_array_equal(f.y, mark)
        np.testing.assert_array_equal(f.u, expected[i][2])
    for k, view in enumerate(views):
        np.testing.assert_array_equal(view, expected[10 + k][2][4:40, 8:64])
    # 20 pictures pinned: the pool grew to its limit (12), never beyond; the frames after that
    # were copied afresh, as without the pool
    assert pool == 12


def test_picture_pool_reuses_pictures_released_between_frames(shared_data: Path) -> None:
    src = shared_data / "videos" / "one-by-one-person-detection.mp4"
    with Decoder(str(src), audio=False, low_memory=True) as dec:
        buffers = set()
        for f, _ in zip(dec, range(30)):
            nf = native_frame(f)
            assert nf is not None
            buffers.add(nf.planes[0].buffer_ptr)
            del f, nf
    assert len(buffers) <= 2  # one picture in use, at most one more while the next is copied


def test_decode_threads_rule() -> None:
    """``low_memory``: one decoder thread up to 1080p; FFmpeg's choice (0) above, for an unknown
    size, and without ``low_memory``; a configured count always wins."""
    assert decode_threads(1920, 1080, low_memory=True) == 1
    assert decode_threads(1920, 1088, low_memory=True) == 1
    assert decode_threads(640, 480, low_memory=True) == 1
    assert decode_threads(2560, 1440, low_memory=True) == 0
    assert decode_threads(3840, 2160, low_memory=True) == 0
    assert decode_threads(0, 0, low_memory=True) == 0
    assert decode_threads(1920, 1080) == 0
    assert decode_threads(1920, 1080, threads=3, low_memory=True) == 3


@pytest.mark.parametrize("low_memory", [False, True])
def test_a_low_memory_decoder_runs_one_thread_and_decodes_the_same_pictures(shared_data: Path, low_memory: bool) -> None:
    """The thread count FFmpeg actually runs (read back after the first frame), and the pictures
    against a default decoder's: one thread must change nothing but the memory."""
    src = shared_data / "videos" / "one-by-one-person-detection.mp4"
    with Decoder(str(src), audio=False) as plain:
        expected = [(f.pts, f.y.copy(), f.v.copy()) for f, _ in zip(plain, range(30))]
        default_threads = plain._container.streams.video[0].codec_context.thread_count
    with Decoder(str(src), audio=False, low_memory=low_memory) as dec:
        for (pts, y, v), f in zip(expected, dec):
            assert f.pts == pts
            np.testing.assert_array_equal(f.y, y)
            np.testing.assert_array_equal(f.v, v)
        threads = dec._container.streams.video[0].codec_context.thread_count
    assert default_threads > 1  # FFmpeg's frame threads (cores + 1) on the default decoder
    assert threads == (1 if low_memory else default_threads)


def test_copied_frames_are_encoded_without_the_native_buffer(av_clip: Path, tmp_path: Path) -> None:
    dec = Decoder(str(av_clip))
    info = dec.open()
    out = tmp_path / "copy.mkv"
    enc = Encoder(str(out), info.video, EncodeSettings(preset="ultrafast", crf=0, options={"qp": "0"}))
    originals = []
    for item in dec:
        if isinstance(item, YuvFrame):
            c = item.copy()
            assert native_frame(c) is None
            originals.append(c.y.copy())
            enc.write(c)
    enc.close()
    _, ys = read_video(out)
    assert len(ys) == len(originals)
    for a, b in zip(originals, ys):
        assert np.abs(a.astype(int) - b).max() <= 1  # lossless x264 (qp 0)


def test_odd_size_is_padded_to_even_and_content_kept(tmp_path: Path) -> None:
    w, h = 641, 361
    yy, xx = np.mgrid[0:h, 0:w]
    y = ((xx + yy) % 256).astype(np.uint8)
    from privacy_filter.media import VideoInfo

    vi = VideoInfo(w, h, Fraction(1, 10), Fraction(10), 3, None, "raw", "yuv420p")
    out = tmp_path / "odd.mkv"
    enc = Encoder(str(out), vi, EncodeSettings(preset="ultrafast", options={"qp": "0"}))
    for i in range(3):
        enc.write(YuvFrame(y, np.full((181, 321), 128, np.uint8), np.full((181, 321), 128, np.uint8), pts=i, time_base=Fraction(1, 10), index=i))
    enc.close()
    times, ys = read_video(out)
    assert times == [Fraction(0), Fraction(1, 10), Fraction(1, 5)]
    assert ys[0].shape == (362, 642)
    np.testing.assert_array_equal(ys[0][:h, :w], y)
    np.testing.assert_array_equal(ys[0][:h, w], y[:, -1])  # replicated column


def test_non_increasing_timestamps_are_repaired_and_counted(tmp_path: Path) -> None:
    from privacy_filter.media import VideoInfo

    vi = VideoInfo(64, 48, Fraction(1, 10), Fraction(10), None, None, "raw", "yuv420p")
    enc = Encoder(str(tmp_path / "rep.mkv"), vi, EncodeSettings(preset="ultrafast"))
    for pts in (0, 1, 1, 3, None):
        enc.write(YuvFrame.blank(64, 48, pts=pts, time_base=Fraction(1, 10)))
    enc.close()
    times, _ = read_video(tmp_path / "rep.mkv")
    assert times == [Fraction(k, 10) for k in (0, 1, 2, 3, 4)]
    assert enc.pts_repaired == 1 and enc.frames_out == 5


def test_lavfi_test_source() -> None:
    with Decoder("lavfi:testsrc2=size=160x120:rate=10:duration=1") as dec:
        info = dec.open()
        frames = [f for f in dec if isinstance(f, YuvFrame)]
    assert (info.video.width, info.video.height) == (160, 120)
    assert len(frames) == 10
    assert [f.index for f in frames] == list(range(10))
    assert not info.live


def test_missing_and_corrupt_inputs_raise_source_error_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="nope.mp4"):
        Decoder(str(missing)).open()
    bad = tmp_path / "garbage.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(SourceError, match="garbage.mp4"):
        Decoder(str(bad)).open()
    with pytest.raises(SourceError, match="directory"):
        Decoder(str(tmp_path)).open()


def test_truncated_file_is_an_error_or_a_clean_shorter_stream(av_clip: Path, tmp_path: Path) -> None:
    data = av_clip.read_bytes()
    cut = tmp_path / "cut.mkv"
    transcode(av_clip, cut)
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    try:
        with Decoder(str(cut)) as dec:
            n = sum(isinstance(i, YuvFrame) for i in dec)
        assert 0 < n < 50  # Matroska plays up to the cut
    except SourceError as exc:
        assert "cut.mkv" in str(exc)
    assert data  # the source clip itself is untouched


def test_dead_live_source_gives_one_error_naming_the_url() -> None:
    with socket.socket() as s:  # a port with nothing listening: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"rtsp://127.0.0.1:{port}/cam"
    assert is_live_source(url)
    dec = Decoder(url, reconnect=ReconnectPolicy(initial_s=0.01, max_s=0.02, max_attempts=3, open_timeout_s=2, read_timeout_s=2))
    with pytest.raises(SourceError, match=f"rtsp://127.0.0.1:{port}/cam.*3 attempts"):
        dec.open()


@pytest.mark.timeout(20)
def test_stop_request_ends_endless_reconnect_backoff() -> None:
    """A live source that stays dead, retried forever with 30 s back-off: a stop request still ends it."""
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here: every connect is refused
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    dec = Decoder(
        f"tcp://127.0.0.1:{port}", live=True, should_stop=stop.is_set, reconnect=ReconnectPolicy(initial_s=30, max_s=30, max_attempts=None, open_timeout_s=1, read_timeout_s=1)
    )
    with pytest.raises(SourceError, match=f"tcp://127.0.0.1:{port}: stopped while connecting"):
        dec.open()
    assert stop.is_set()


def _ts_bytes(n: int, rate: int = 25, audio: bool = False) -> bytes:
    """An H.264 (+ MP2 audio) MPEG-TS stream in memory, as a camera would send it."""
    import io

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        v = out.add_stream("libx264", rate=rate)
        v.width, v.height, v.pix_fmt = 160, 96, "yuv420p"
        v.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "5"}
        a = out.add_stream("mp2", rate=48000, layout="mono") if audio else None
        samples = 0
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((144, 160), (i * 8) % 256, np.uint8), format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, rate)
            for p in v.encode(f):
                out.mux(p)
            while a is not None and samples < (i + 1) * 48000 // rate:
                af = av.AudioFrame.from_ndarray(np.zeros((1, 1152), np.int16), format="s16", layout="mono")
                af.sample_rate, af.pts, af.time_base = 48000, samples, Fraction(1, 48000)
                samples += 1152
                for p in a.encode(af):
                    out.mux(p)
        for p in v.encode(None):
            out.mux(p)
        for p in a.encode(None) if a is not None else []:
            out.mux(p)
    return buf.getvalue()


def test_live_udp_source_reconnects_keeps_time_monotonic_then_fails_clearly(tmp_path: Path) -> None:
    """A camera sends, goes silent (restarting its clock), sends again, then dies.

    Video and audio are muxed as they arrive: audio time going backwards after the
    reconnect would make the muxer fail (SinkError) instead of the source's own error.
    """
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bursts = [_ts_bytes(50, audio=True), _ts_bytes(50, audio=True)]  # both start at pts 0, like a restarted encoder

    def camera() -> None:
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        time.sleep(0.3)
        for data in bursts:
            for k in range(0, len(data), 1316):
                tx.sendto(data[k : k + 1316], ("127.0.0.1", port))
                time.sleep(0.002)
            time.sleep(2.0)
        tx.close()

    threading.Thread(target=camera, daemon=True).start()
    url = f"udp://127.0.0.1:{port}"
    dec = Decoder(url, reconnect=ReconnectPolicy(initial_s=0.05, max_s=0.1, max_attempts=2, open_timeout_s=1.0, read_timeout_s=0.7))
    pts: list[int] = []
    audio_s: list[Fraction] = []
    enc: Encoder | None = None
    with pytest.raises(SourceError, match=f"{url} unreachable after 2 attempts.*timeout"):
        info = dec.open()
        assert info.audio is not None
        enc = Encoder(str(tmp_path / "out.mkv"), info.video, EncodeSettings(preset="ultrafast"), audio=info.audio)
        for f in dec:
            if isinstance(f, YuvFrame):
                pts.append(f.pts)
                enc.write(f)
            else:
                audio_s.append(f.dts * f.time_base)
                enc.write_audio(f)
    assert enc is not None
    enc.close()
    assert dec.reconnects == 1
    assert len(pts) >= 80  # UDP may lose the first packets before the socket is bound
    assert all(a < b for a, b in zip(pts, pts[1:])), "time keeps increasing across the reconnect"
    assert len(audio_s) >= 60 and enc.audio_packets_out == len(audio_s)
    assert all(a < b for a, b in zip(audio_s, audio_s[1:])), "audio time keeps increasing across the reconnect"
    assert audio_s[-1] > 3, "the second session's audio was shifted after the first (2 s each), not dropped"


def test_udp_mpegts_sink_sends_transport_stream_packets(av_clip: Path) -> None:
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.settimeout(5)
    port = rx.getsockname()[1]
    try:
        enc = transcode(av_clip, f"udp://127.0.0.1:{port}", audio=None, tune="zerolatency")
        data = rx.recv(65536)
    finally:
        rx.close()
    assert enc.frames_out == 50
    assert len(data) == 1316 and data[0] == 0x47 and data[188] == 0x47  # 7 TS packets of 188 bytes


def test_hls_sink_writes_a_playable_playlist(av_clip: Path, tmp_path: Path) -> None:
    playlist = tmp_path / "hls" / "index.m3u8"
    playlist.parent.mkdir()
    transcode(av_clip, playlist, audio=None)
    text = playlist.read_text()
    assert "#EXT-X-ENDLIST" in text and ".ts" in text
    t_out, _ = read_video(playlist)
    assert len(t_out) == 50


def test_unusable_codec_and_bad_output_folder_are_clear_errors(av_clip: Path, tmp_path: Path) -> None:
    dec = Decoder(str(av_clip))
    info = dec.open()
    dec.close()
    with pytest.raises(SinkError, match="output folder does not exist"):
        Encoder(str(tmp_path / "no" / "such" / "out.mp4"), info.video)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(SinkError, match="a-file is a file, not a folder"):  # not "does not exist"
        Encoder(str(tmp_path / "a-file" / "out.mp4"), info.video)
    with pytest.raises(SinkError, match="not available"):
        Encoder(str(tmp_path / "x.mp4"), info.video, EncodeSettings(codec="no_such_codec"))
    try:
        import cupy

        gpu = cupy.cuda.is_available()
    except Exception:
        gpu = False
    if not gpu:  # here: no NVIDIA driver, so NVENC must fail with a message that says so
        with pytest.raises(SinkError, match="h264_nvenc.*libx264"):
            Encoder(str(tmp_path / "nv.mp4"), info.video, EncodeSettings(codec="h264_nvenc", preset="p4"))


def _serve(root: Path, tls: bool):  # type: ignore[no-untyped-def]
    """A real HTTP server (http.server) on an ephemeral loopback port, serving ``root``; with
    ``tls``, HTTPS with a certificate from a throwaway CA (trustme; FFmpeg does not verify
    certificates unless asked to)."""
    import functools
    import http.server
    import ssl
    import threading

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def shutdown_request(self, request: object) -> None:  # TLS: say close_notify before closing
            if tls:
                try:
                    request.unwrap()  # type: ignore[attr-defined]
                except (OSError, ValueError):
                    pass
            super().shutdown_request(request)  # type: ignore[arg-type]

    server = Server(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(root)))
    if tls:
        import trustme

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        trustme.CA().issue_cert("127.0.0.1").configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"


@pytest.fixture()
def http_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real HTTP server on an ephemeral loopback port, serving ``tmp_path``."""
    server, base = _serve(tmp_path, tls=False)
    try:
        yield tmp_path, base
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(params=["http", "https"])
def web_dir(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """``http_dir``, and the same over HTTPS."""
    server, base = _serve(tmp_path, tls=request.param == "https")
    try:
        yield tmp_path, base
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(60)
def test_http_source_gives_the_file_frames_timestamps_and_audio(av_clip: Path, web_dir: tuple[Path, str]) -> None:
    """A clip served over real HTTP, and over HTTPS, decodes exactly as the file does: every
    frame with its timestamp and picture, and every audio packet byte for byte. Plain
    http(s) is not live."""
    root, base = web_dir
    served = root / "clip.mp4"
    if base.startswith("https"):
        # moov first, read in one pass: http.server has no Range support, and over TLS
        # FFmpeg's seek to a trailing moov then sees a cut-off response
        _remux_faststart(av_clip, served)
    else:
        served.write_bytes(av_clip.read_bytes())
    url = f"{base}/clip.mp4"
    assert not is_live_source(url)
    frames, audio = [], []
    with Decoder(url) as dec:
        info = dec.open()
        for item in dec:
            (audio if isinstance(item, AudioPacket) else frames).append(item)
    t_file, y_file = read_video(av_clip)
    assert read_video(served)[0] == t_file
    assert [Fraction(f.pts) * f.time_base for f in frames] == t_file and len(frames) == 50
    assert all(np.array_equal(f.y, y) for f, y in zip(frames, y_file))
    assert info.audio is not None
    assert [(p.data, Fraction(p.pts) * p.time_base) for p in audio] == read_audio_packets(av_clip)


def _remux_faststart(src: Path, dst: Path) -> None:
    """Stream-copy an MP4 with its index (moov) first."""
    with av.open(str(src)) as inp, av.open(str(dst), "w", options={"movflags": "+faststart"}) as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams if s.type in ("video", "audio")}
        for packet in inp.demux():
            if packet.dts is None or packet.stream.index not in streams:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


def test_http_source_that_is_not_there_is_one_error_naming_the_url(http_dir: tuple[Path, str]) -> None:
    _, base = http_dir
    with pytest.raises(SourceError, match=f"{base}/missing.mp4.*404"):
        Decoder(f"{base}/missing.mp4").open()


@pytest.mark.timeout(60)
def test_hls_playlist_over_http_is_a_live_source_that_plays_to_its_end(av_clip: Path, http_dir: tuple[Path, str]) -> None:
    """Our own HLS output, served over real HTTP and read back as a live source: every frame
    arrives, with the playlist's timestamps, and #EXT-X-ENDLIST ends the stream cleanly."""
    root, base = http_dir
    playlist = root / "hls" / "index.m3u8"
    playlist.parent.mkdir()
    transcode(av_clip, playlist, audio=None)
    url = f"{base}/hls/index.m3u8"
    assert is_live_source(url)
    with Decoder(url, reconnect=ReconnectPolicy(initial_s=0.01, max_s=0.02, max_attempts=2, open_timeout_s=5, read_timeout_s=5)) as dec:
        dec.open()
        frames = [f for f in dec if isinstance(f, YuvFrame)]
    t_local, _ = read_video(playlist)
    assert len(frames) == 50 and dec.reconnects == 0
    assert [Fraction(f.pts) * f.time_base for f in frames] == t_local


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, timeout_s: float = 10.0) -> None:
    """Wait until something listens on ``port``, without connecting (a one-client server would
    take a probe connection as its client): read the kernel's socket table (Linux)."""
    deadline = time.monotonic() + timeout_s
    needle = f":{port:04X} "
    while time.monotonic() < deadline:
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            if any(needle in line.split()[1] + " " and line.split()[3] == "0A" for line in lines):
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} within {timeout_s} s")


@pytest.mark.timeout(60)
def test_rtsp_push_delivers_every_frame_to_a_listening_server(av_clip: Path) -> None:
    """RTSP push (ANNOUNCE/RECORD over TCP) to FFmpeg's own RTSP server in listen mode, run by
    PyAV in a thread: all 50 frames arrive, spaced exactly as in the source (the first one
    has no time until RTCP sync, as with any RTP receiver). Video only: FFmpeg's listen-mode
    server refuses a session that adds the AAC track, so audio over RTSP push is untested."""
    import threading

    port = _free_port()
    url = f"rtsp://127.0.0.1:{port}/live"
    received: dict[str, object] = {}

    def server() -> None:
        try:
            with av.open(url, options={"rtsp_flags": "listen", "listen_timeout": "20"}) as c:
                received["frames"] = [(f.pts, f.time_base) for f in c.decode(video=0)]
        except Exception as exc:  # reported by the assertions below
            received["error"] = repr(exc)

    thread = threading.Thread(target=server, daemon=True)
    thread.start()
    _wait_listening(port)
    enc = transcode(av_clip, url, audio=None)
    thread.join(30)
    assert "error" not in received, received.get("error")
    frames = received["frames"]
    assert isinstance(frames, list) and len(frames) == enc.frames_out == 50
    t_src, _ = read_video(av_clip)
    got = [Fraction(pts) * tb for pts, tb in frames[1:]]
    assert [t - got[0] for t in got] == [t - t_src[1] for t in t_src[1:]]


@pytest.mark.timeout(60)
def test_rtmp_push_delivers_every_frame_and_the_audio_bytes(av_clip: Path, tmp_path: Path) -> None:
    """RTMP (FLV) push to the ffmpeg CLI listening as an RTMP server and copying what it gets
    to a file: every frame with the source's spacing, and the AAC packets byte for byte."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg CLI is needed as the RTMP server (apt-get install ffmpeg; .ci/run installs it)")
    port = _free_port()
    url = f"rtmp://127.0.0.1:{port}/live/stream"
    out = tmp_path / "received.flv"
    server = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "quiet", "-listen", "1", "-i", url, "-c", "copy", str(out)])
    try:
        _wait_listening(port)
        enc = transcode(av_clip, url)
        server.wait(30)
    finally:
        server.kill()
    t_src, _ = read_video(av_clip)
    t_out, _ = read_video(out)
    assert len(t_out) == enc.frames_out == 50
    assert [t - t_out[0] for t in t_out] == [t - t_src[0] for t in t_src]
    assert [p for p, _ in read_audio_packets(out)] == [p for p, _ in read_audio_packets(av_clip)]


@pytest.mark.timeout(60)
def test_rtmp_source_from_a_listening_server_gives_every_frame_and_the_audio_bytes(av_clip: Path) -> None:
    """An RTMP source: the ffmpeg CLI listens as an RTMP server and sends the clip (stream
    copy, FLV) to the first client, our decoder. Every frame arrives with the source's
    spacing and pixels, and the AAC packets byte for byte. The server then closes the
    connection, which FFmpeg's RTMP client reports as an I/O error: for a live source that
    is a drop, so the decoder tries to reconnect (once, by this policy) and then raises one
    SourceError naming the URL, after everything it received was delivered."""
    import shutil
    import subprocess

    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg CLI is needed as the RTMP server (apt-get install ffmpeg; .ci/run installs it)")
    port = _free_port()
    url = f"rtmp://127.0.0.1:{port}/live/stream"
    assert is_live_source(url)
    server = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "quiet", "-i", str(av_clip), "-c", "copy", "-f", "flv", "-listen", "1", url])
    try:
        _wait_listening(port)
        frames, audio = [], []
        policy = ReconnectPolicy(initial_s=0.01, max_s=0.02, max_attempts=1, open_timeout_s=10, read_timeout_s=10)
        with Decoder(url, reconnect=policy) as dec:
            info = dec.open()
            with pytest.raises(SourceError, match=f"source {url} unreachable after 1 attempts"):
                for item in dec:
                    (audio if isinstance(item, AudioPacket) else frames).append(item)
        server.wait(30)
    finally:
        server.kill()
    t_src, y_src = read_video(av_clip)
    got = [Fraction(f.pts) * f.time_base for f in frames]
    assert len(frames) == 50 and dec.reconnects == 0
    assert [t - got[0] for t in got] == [t - t_src[0] for t in t_src]
    assert all(np.array_equal(f.y, y) for f, y in zip(frames, y_src))
    assert info.audio is not None and info.audio.codec == "aac"
    assert [p.data for p in audio] == [p for p, _ in read_audio_packets(av_clip)]


def test_a_display_rotation_is_read_and_written_back(av_clip: Path, tmp_path: Path) -> None:
    """A frame's display rotation (a phone's portrait video is stored sideways with a 90°
    display matrix) is read into its metadata, and an output gets the same display matrix, so
    players show it as they showed the source; the pictures are stored unturned, like the
    source's. The audio, which reaches the muxer before the first picture, waits for it and
    is all there."""
    rotated = tmp_path / "rotated.mp4"
    dec = Decoder(str(av_clip))
    info = dec.open()
    enc = Encoder(str(rotated), info.video, EncodeSettings(preset="ultrafast"), audio=info.audio_stream)
    for item in dec:
        if isinstance(item, AudioPacket):
            enc.write_audio(item)
        else:
            assert "rotation" not in item.metadata and item.turns == 0
            item.metadata["rotation"] = 90
            enc.write(item)
    enc.close()
    dec.close()
    with av.open(str(rotated)) as c:
        assert next(c.decode(video=0)).rotation == 90
    t_src, _ = read_video(av_clip)
    for ext in (".mp4", ".mkv"):
        out = tmp_path / f"again{ext}"
        again = transcode(rotated, out)
        with Decoder(str(out)) as d:
            d.open()
            frames = [f for f in d if isinstance(f, YuvFrame)]
        assert len(frames) == 50 and all(f.metadata["rotation"] == 90 and f.turns == 1 for f in frames)
        assert (frames[0].width, frames[0].height) == (info.video.width, info.video.height)
        t_out = read_video(out)[0]
        if ext == ".mp4":
            assert t_out == t_src
        else:  # Matroska cannot store the AAC priming's negative time: every stream starts 21 ms later
            assert [t - t_out[0] for t in t_out] == [t - t_src[0] for t in t_src] and t_out[0] - t_src[0] < Fraction(1, 40)
        assert again.audio_packets_out == len(read_audio_packets(av_clip)) == len(read_audio_packets(out))


def test_the_main_video_stream_is_chosen_over_a_cover_picture_stream_listed_first(tmp_path: Path) -> None:
    """A file whose first video stream is a one-picture cover (MJPEG) and whose second is the
    video: the decoder reads the video (FFmpeg's best stream), all 25 frames of it, not the
    cover's single picture."""
    path = tmp_path / "cover-first.mkv"
    with av.open(str(path), "w") as out:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 96, 96, "yuvj420p"
        video = out.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
        pic = av.VideoFrame.from_ndarray(np.full((96, 96, 3), 200, np.uint8), format="rgb24").reformat(format="yuvj420p")
        pic.pts = 0
        for p in [*cover.encode(pic), *cover.encode()]:
            out.mux(p)
        for i in range(25):
            f = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 8 * i, np.uint8), format="rgb24").reformat(format="yuv420p")
            f.pts = i
            for p in video.encode(f):
                out.mux(p)
        for p in video.encode():
            out.mux(p)
    with av.open(str(path)) as c:
        assert [s.codec_context.name for s in c.streams.video] == ["mjpeg", "h264"]
    with Decoder(str(path)) as dec:
        info = dec.open()
        frames = [f for f in dec if isinstance(f, YuvFrame)]
    assert (info.video.width, info.video.height, info.video.codec) == (320, 240, "h264")
    assert len(frames) == 25 and all(f.width == 320 for f in frames)


def test_an_image_sequence_is_a_source_and_a_missing_one_is_named(tmp_path: Path) -> None:
    """``img%03d.png`` reads the numbered pictures in order (FFmpeg's image2, 25 frames/s); a
    pattern that matches no file is one error naming it, not "file not found" for the
    literal name."""
    import cv2

    for i in range(1, 13):
        cv2.imwrite(str(tmp_path / f"img{i:03d}.png"), np.full((48, 64, 3), 20 * i, np.uint8))
    with Decoder(str(tmp_path / "img%03d.png")) as dec:
        info = dec.open()
        frames = [f for f in dec if isinstance(f, YuvFrame)]
    assert len(frames) == 12 and (info.video.width, info.video.height) == (64, 48)
    assert [int(f.y.mean()) for f in frames] == sorted(int(f.y.mean()) for f in frames)  # in numbered order
    assert len({int(f.y.mean()) for f in frames}) == 12
    assert [Fraction(f.pts) * f.time_base for f in frames] == [Fraction(i, 25) for i in range(12)]
    with pytest.raises(SourceError, match=r"no file of the image sequence .*nope%03d\.png"):
        Decoder(str(tmp_path / "nope%03d.png")).open()


# --------------------------------------------------------------------------- the first pass's samples


def _index_clip(path: Path, frames: int, keyint: int, b_frames: bool = False) -> Path:
    """Flat grey pictures whose level encodes their index (16 + 2 i), keyframes every ``keyint``;
    ``b_frames``: the fixed pattern I B B B P B B B P ..., the B-frames unreferenced."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"g": str(keyint), "keyint_min": str(keyint), "sc_threshold": "0", "crf": "10"}
        if b_frames:
            s.options = {**s.options, "x264-params": "b-adapt=0:bframes=3:b-pyramid=none"}
        for i in range(frames):
            planes = np.full((72, 64), 128, np.uint8)  # I420: Y rows, then U and V
            planes[:48] = 16 + 2 * i
            f = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            f.pts = i
            for pkt in s.encode(f):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


@pytest.mark.parametrize("keyint", [10, 3, 1000])
def test_first_pass_takes_one_frame_from_each_slot_of_the_file(tmp_path: Path, keyint: int) -> None:
    """One sample per equal slot of the duration, in order, whatever the keyframe spacing (dense
    keyframes: seeks; one keyframe: decoding on instead of seeking back each time)."""
    from privacy_filter.io.av_source import sample_lumas

    frames, n = 100, 10
    clip = _index_clip(tmp_path / f"c{keyint}.mp4", frames, keyint)
    got = [round((float(y.mean()) - 16) / 2) for y in sample_lumas(str(clip), n)]
    slot = frames // n
    assert len(got) == n and all(k * slot <= i < (k + 1) * slot for k, i in enumerate(got)), got


@pytest.mark.parametrize("n", [10, 30])
def test_first_pass_skips_unreferenced_frames_only_where_a_slot_holds_a_referenced_one(tmp_path: Path, n: int) -> None:
    """Slots of 4 frames or more: B-frames no other frame refers to are not decoded (the first
    pass costs less), so every sample is an I or P picture (index % 4 == 0 here), still one in
    each slot.  Shorter slots (30 samples of 100 frames) decode every frame, as before."""
    from privacy_filter.io.av_source import sample_lumas

    frames = 100
    clip = _index_clip(tmp_path / "b.mp4", frames, 1000, b_frames=True)
    with av.open(str(clip)) as c:
        assert [int(f.pict_type) for f in c.decode(video=0)][:9] == [1, 3, 3, 3, 2, 3, 3, 3, 2]  # I B B B P ...: the case under test
    got = [round((float(y.mean()) - 16) / 2) for y in sample_lumas(str(clip), n)]
    slot = frames / n
    assert len(got) == n and all(k * slot <= i < (k + 1) * slot for k, i in enumerate(got)), got
    if n == 10:
        assert all(i % 4 == 0 for i in got) and got != [10 * k for k in range(n)], got
    else:
        assert any(i % 4 for i in got), got  # B-frames were decoded and sampled


def test_first_pass_spreads_over_a_stream_that_starts_late_and_seeks_inexactly(tmp_path: Path) -> None:
    """MPEG-TS: the stream starts after 0 and a seek lands on the keyframe *after* its target.
    Slots are counted from the stream's start; the samples stay distinct, in order and spread
    over the file (each seek lands at most a keyframe interval late)."""
    from privacy_filter.io.av_source import sample_lumas

    clip = _index_clip(tmp_path / "c.ts", 100, 10)
    with av.open(str(clip)) as c:
        assert c.streams.video[0].start_time > 0  # the case under test
    got = [round((float(y.mean()) - 16) / 2) for y in sample_lumas(str(clip), 10)]
    assert len(got) >= 7 and got == sorted(got) and len(set(got)) == len(got), got
    assert got[0] <= 30 and got[-1] >= 80, got
