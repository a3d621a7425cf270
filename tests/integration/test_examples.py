"""The examples in examples/ run as documented, on real video, real ZeroMQ sockets and a real model.

The model is the reference selfie ONNX from ../shared/data, described by a spec YAML, so no
download is needed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import av
import cv2
import pytest

VIDEO = "videos/one-by-one-person-detection.mp4"


@pytest.fixture(scope="module")
def selfie_yaml(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("ex") / "selfie_ref.yaml"
    p.write_text(
        f"onnx: {shared_data / 'models/selfie_segmentation_reference.onnx'}\n"
        "input_name: 'input_1:0'\noutput_name: activation_10\ninput_layout: NHWC\nsize: [256, 256]\n"
        "color: rgb\nscale: 0.00392156862745098\noffset: 0\noutput_kind: sigmoid\noutput_layout: NHWC\nperson_index: 0\n"
    )
    return p


def _run(repo_root: Path, *args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_zmq_stage_client(repo_root, shared_data, selfie_yaml, tmp_path):
    png = tmp_path / "masked.png"
    out = _run(repo_root, "examples/zmq_stage_client.py", str(shared_data / VIDEO), "--skip", "600", "--frames", "12", "--model", str(selfie_yaml), "--out", str(png))
    m = re.search(
        r"sent (\d+) frames, received (\d+) filtered frames, (\d+) with masks; largest covered share ([\d.]+)%; "
        r"bad messages (\d+)",
        out,
    )
    assert m, out
    sent, received, masks, share, bad = int(m[1]), int(m[2]), int(m[3]), float(m[4]), int(m[5])
    assert sent == received == masks == 12 and bad == 0
    assert 2.0 < share < 60.0  # a person was found and covered, not the whole frame
    img = cv2.imread(str(png))
    assert img.shape == (432, 768 * 2, 3)  # filtered frame beside its mask


def test_python_api(repo_root, shared_data, selfie_yaml, tmp_path):
    out = _run(repo_root, "examples/python_api.py", str(shared_data / VIDEO), str(tmp_path), "--frames", "10", "--model", str(selfie_yaml))
    assert "[one call]" in out and "[own loop]" in out
    for name in ("cctv.mp4", "video-call.mkv"):
        with av.open(str(tmp_path / name)) as c:
            n = sum(1 for _ in c.decode(video=0))
        assert n >= 10, (name, n)
