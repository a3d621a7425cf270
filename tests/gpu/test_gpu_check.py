"""scripts/gpu_check.py --emulate: every step that can run without a GPU runs, and the report says
which steps were real, emulated or skipped (with the reason).  No GPU here: nothing is 'real'."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from test_tensorrt_glue import pssn_onnx  # noqa: F401  (fixture)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


@pytest.mark.emulated_gpu
def test_gpu_check_emulated_writes_one_report(tmp_path: Path) -> None:
    import subprocess

    res = subprocess.run([sys.executable, str(SCRIPT), "--emulate", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    report = json.loads((tmp_path / "report.json").read_text())
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert list(report["steps"]) == [n for n, _ in mod.STEPS]
    modes = {n: s["mode"] for n, s in report["steps"].items()}
    assert "real" not in modes.values(), "nothing runs on a GPU under --emulate"
    assert modes["sanitizer"] == modes["install"] == "skipped"
    assert all(s["reason"] for s in report["steps"].values() if s["mode"] == "skipped")
    for name in ("probe", "kernels", "parity", "race_amplifier", "timings", "device_chain", "process"):
        assert modes[name] == "emulated", (name, report["steps"][name])
        assert report["steps"][name]["ok"] is True, (name, report["steps"][name])
    cases = report["steps"]["parity"]["cases"]
    assert any(c.startswith("3840x2160") for c in cases) and any(c.startswith("641x361") for c in cases)
    assert res.returncode == 0 and report["ok"], res.stdout + res.stderr


def test_a_failing_or_hanging_step_is_reported_and_the_rest_still_run(tmp_path: Path, monkeypatch) -> None:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    import argparse

    def boom(args: argparse.Namespace) -> dict:
        raise RuntimeError("cudaErrorIllegalAddress")

    monkeypatch.setattr(mod, "step_probe", boom)
    res = mod.run_step("probe", argparse.Namespace(emulate=True))
    assert res["ok"] is False and "cudaErrorIllegalAddress" in res["error"]


@pytest.mark.mocked_tensorrt
@pytest.mark.emulated_gpu
def test_tensorrt_check_runs_against_the_fake(pssn_onnx: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    """scripts/tensorrt_check.py's own plumbing, against the FAKE TensorRT (never real TensorRT here)."""
    for name in ("tensorrt", "cupy", "cupyx"):
        monkeypatch.setitem(sys.modules, name, sys.modules.get(name))
    monkeypatch.setenv("PRIVACY_FILTER_CACHE_DIR", str(tmp_path / "cache"))
    spec = importlib.util.spec_from_file_location("tensorrt_check", SCRIPT.parent / "tensorrt_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rc = mod.main(["--onnx", str(pssn_onnx), "--out", str(tmp_path / "o"), "--fake", "10.8.0.43"])
    report = json.loads((tmp_path / "o" / "tensorrt_report.json").read_text())
    assert report["fake"] is True
    cases = report["cases"]
    assert cases["int8 from cache"]["skipped"] == "no --calib-cache given"
    for name in ("fp32 batch 1..1", "fp32 batch 1..4", "fp16 batch 1..1", "fp16 batch 1..4"):
        assert cases[name]["ok"] is True, (name, cases[name])
    assert cases["fp32 batch 1..4"]["frames_3"]["infer_device_vs_host_agree"] >= 0.99
    assert rc == 0
