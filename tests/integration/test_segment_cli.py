"""``privacy-filter segment`` and ``models`` through the real CLI entry point."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from privacy_filter.cli import main
from privacy_filter.models.registry import ResolvedModel
from support.seg_fixtures import iou


@pytest.fixture(scope="module")
def model_arg(selfie_model: ResolvedModel, spec_dir: Path) -> str:
    return "selfie" if selfie_model.spec.name == "selfie" else str(spec_dir / "selfie_reference.yaml")


@pytest.fixture()
def inputs(tmp_path: Path, shared_data: Path) -> Path:
    d = tmp_path / "in"
    d.mkdir()
    for ds, name in (("portrait_dev", "00001.jpg"), ("people_pseudo", "10.jpg"), ("cihp_multi", "0005008.jpg")):
        shutil.copy(shared_data / "images" / ds / "images" / name, d / name)
    return d


def _gt(shared_data: Path, ds: str, stem: str, shape: tuple[int, int]) -> np.ndarray:
    m = cv2.imread(str(shared_data / "images" / ds / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
    return cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def test_segment_folder_writes_one_binary_png_per_image(inputs: Path, tmp_path: Path, model_arg: str, shared_data: Path, capsys) -> None:
    out = tmp_path / "masks"
    assert main(["segment", str(inputs), "--out", str(out), "--model", model_arg]) == 0
    assert f"3 masks written to {out}" in capsys.readouterr().out  # says how many and where
    written = sorted(p.name for p in out.iterdir())
    assert written == ["00001.png", "0005008.png", "10.png"]
    for stem, ds in (("00001", "portrait_dev"), ("10", "people_pseudo"), ("0005008", "cihp_multi")):
        img = cv2.imread(str(next(inputs.glob(stem + ".*"))))
        m = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert m.dtype == np.uint8 and m.ndim == 2 and m.shape == img.shape[:2]
        assert set(np.unique(m)) <= {0, 255}
        floor = 0.6 if ds == "cihp_multi" else 0.85
        assert iou(m == 255, _gt(shared_data, ds, stem, m.shape)) > floor


def test_segment_soft_and_tiles(inputs: Path, tmp_path: Path, model_arg: str) -> None:
    img = inputs / "0005008.jpg"
    out = tmp_path / "soft"
    assert main(["segment", str(img), "--out", str(out), "--model", model_arg, "--soft", "--tiles", "2x1"]) == 0
    m = cv2.imread(str(out / "0005008.png"), cv2.IMREAD_UNCHANGED)
    assert m.shape == (313, 576)
    assert len(np.unique(m)) > 50  # probability x 255, not 0/255


def test_corrupt_image_is_named_and_others_still_written(inputs: Path, tmp_path: Path, model_arg: str, capsys) -> None:
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    out = tmp_path / "masks"
    rc = main(["segment", str(inputs), "--out", str(out), "--model", model_arg])
    err = capsys.readouterr().err
    assert rc == 2
    assert "broken.jpg" in err and "cannot decode" in err
    assert sorted(p.name for p in out.iterdir()) == ["00001.png", "0005008.png", "10.png"]


def test_missing_input_and_unknown_model(tmp_path: Path, inputs: Path, capsys) -> None:
    assert main(["segment", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.jpg" in capsys.readouterr().err
    assert main(["segment", str(inputs), "--out", str(tmp_path / "o"), "--model", "peoplenet"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'peoplenet'" in err and "selfie" in err


def test_models_inspect_prints_io_and_spec(spec_dir: Path, capsys) -> None:
    assert main(["models", "inspect", str(spec_dir / "bodypix.yaml")]) == 0
    out = capsys.readouterr().out
    assert "input : image_nhwc float32[1,H,W,3]" in out
    assert "segment_logits_nhwc" in out and "logits NHWC" in out


def test_models_list_names_every_builtin(capsys) -> None:
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("selfie", "selfie-landscape", "peoplesemsegnet-shuffleseg", "peoplesemsegnet-vanilla"):
        assert name in out
