"""``privacy-filter eval``: pooled 2-class mIoU, recall, timings; GT handling."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from privacy_filter.cli import main
from privacy_filter.evaluate import Confusion, read_mask
from privacy_filter.models.registry import ResolvedModel


@pytest.fixture(scope="module")
def model_arg(selfie_model: ResolvedModel, spec_dir: Path) -> str:
    return "selfie" if selfie_model.spec.name == "selfie" else str(spec_dir / "selfie_reference.yaml")


def test_confusion_is_pooled_over_pixels_not_averaged_per_image() -> None:
    c = Confusion()
    big_gt = np.zeros((100, 100), bool)
    big_gt[:50] = True
    c.add(big_gt.copy(), big_gt)  # perfect on a big image
    small_gt = np.zeros((2, 2), bool)
    small_gt[0, 0] = True
    tiny = c.add(~small_gt, small_gt)  # entirely wrong on a tiny image
    assert tiny.miou == 0.0
    assert (c.tp, c.fp, c.fn, c.tn) == (5000, 3, 1, 5000)
    assert c.person_iou == pytest.approx(5000 / 5004)
    assert c.background_iou == pytest.approx(5000 / 5004)
    assert c.miou == pytest.approx(5000 / 5004)  # a per-image average would say 0.5
    assert c.recall == pytest.approx(5000 / 5001)


def test_smaller_gt_mask_is_resized_nearest(tmp_path: Path) -> None:
    m = np.zeros((2, 3), np.uint8)
    m[1, 2] = 7  # any nonzero is person
    cv2.imwrite(str(tmp_path / "m.png"), m)
    gt = read_mask(tmp_path / "m.png", 6, 4)
    assert gt.shape == (4, 6) and gt.dtype == bool
    assert gt.sum() == 4 and gt[2:, 4:].all()  # one source pixel → a 2x2 block, no interpolation


def test_eval_json_on_real_data(model_arg: str, shared_data: Path, capsys) -> None:
    d = shared_data / "images" / "people_pseudo"  # includes masks smaller than their images
    assert main(["eval", "--images", str(d / "images"), "--masks", str(d / "masks"), "--model", model_arg, "--limit", "12", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["images"] == 12 and r["pooling"] == "dataset pixel totals"
    assert 0.85 < r["miou"] <= 1.0 and r["miou"] == pytest.approx((r["person_iou"] + r["background_iou"]) / 2)
    assert 0.8 < r["person_recall"] <= 1.0 and r["median_ms"] > 0
    assert len(r["per_image"]) == 12


def test_eval_table_and_errors(model_arg: str, shared_data: Path, tmp_path: Path, capsys) -> None:
    d = shared_data / "images" / "cihp_multi"
    assert main(["eval", "--images", str(d / "images"), "--masks", str(d / "masks"), "--model", model_arg]) == 0
    out = capsys.readouterr().out
    assert "mIoU (2-class, pooled)" in out and "person recall" in out

    assert main(["eval", "--images", str(tmp_path / "none"), "--masks", str(d / "masks")]) == 2
    assert "no such images folder" in capsys.readouterr().err
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    shutil.copy(d / "images" / "0002190.jpg", imgs / "orphan.jpg")
    assert main(["eval", "--images", str(imgs), "--masks", str(d / "masks")]) == 2
    assert "no ground-truth mask" in capsys.readouterr().err
