"""An INT8 copy of the converted NanoDet for ONNX Runtime's CPU provider, made once per cache.

Why: on a CPU the detector is the CCTV preset's largest cost (about 70 ms CPU per 1080p run at
640x384, against x264's ~30 ms per frame).  NanoDet-g is plain 3x3 convolutions, which ONNX
Runtime runs as u8s8 integer GEMMs: one run then takes about 0.64x the CPU time (measured on
this project's AVX2 machine, one thread, interleaved: 75 -> 48 ms), with the same coverage on
the CCTV dev clips and all but one proxy view (docs/cctv.md, "INT8 detector").

How: ONNX Runtime's own static quantizer (QDQ format, per-channel int8 weights, uint8
activations) with two choices that the measurements forced:

* ``reduce_range``: 7-bit weights.  AVX2 without VNNI multiplies u8 x s8 pairs into int16 and
  saturates; full-range weights moved the box logits by up to 5.6 and lost a person on PETS.
* the three 1x1 output convolutions stay float (the table's ``float_nodes``): quantizing the
  logits themselves moved false cover on TUD over the 0.10 bar; they are ~1 % of the work.

Activation ranges are not calibrated here: a fresh machine has no footage to calibrate on.
They were measured once (``scripts/calibrate_detector.py``, MinMax over frames of the shared
sample videos, none of them the CCTV evaluation clips) and are kept in ``nanodet_int8_ranges.json``
beside this module, keyed by the tensor names our TF.js converter gives the graph.  The
quantizer gets them as ``TensorQuantOverrides`` (its documented way to fix a tensor's range);
its own calibration then sees one neutral picture and decides nothing.  A model whose tensors
the table does not cover (another converter version, a user's own ONNX) is never quantized with
guessed ranges: ``precision: int8`` refuses it with a message, ``auto`` runs it in float.  Each
new copy is also checked once against the float model (``relative_error``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from privacy_filter.errors import ModelError
from privacy_filter.models.pull import say, sha256_file

log = logging.getLogger(__name__)

#: Bump when the quantization recipe changes: cached INT8 copies are keyed by it.
QUANTIZER_VERSION = "1"
RANGES_FILE = Path(__file__).with_name("nanodet_int8_ranges.json")


@cache
def ranges_table() -> dict[str, Any]:
    """The committed calibration: ``{"tensors": {name: [min, max]}, "float_nodes": [...],
    "conv_nodes": [...], ...}`` (``conv_nodes``: the float graph's Conv names, ``table_fits``)."""
    try:
        table = json.loads(RANGES_FILE.read_text())
        tensors = {str(k): (float(v[0]), float(v[1])) for k, v in table["tensors"].items()}
        float_nodes = [str(n) for n in table["float_nodes"]]
        convs = [str(n) for n in table["conv_nodes"]]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ModelError(f"{RANGES_FILE}: unreadable INT8 calibration table ({type(exc).__name__}: {exc}); reinstall privacy-filter") from None
    return {**table, "tensors": tensors, "float_nodes": float_nodes, "conv_nodes": convs}


def conv_activations(model: Any, skip: set[str]) -> set[str]:
    """Names of the tensors the quantizer needs ranges for: each quantized Conv's input and output."""
    names: set[str] = set()
    for node in model.graph.node:
        if node.op_type == "Conv" and node.name not in skip:
            names.update((node.input[0], node.output[0]))
    return names


def missing_ranges(model: Any, table: dict[str, Any]) -> list[str]:
    """Tensors (or float nodes) of ``model`` that the table does not know; empty when it fits."""
    nodes = {n.name for n in model.graph.node}
    missing = [f"node {n}" for n in table["float_nodes"] if n not in nodes]
    missing += sorted(conv_activations(model, set(table["float_nodes"])) - set(table["tensors"]))
    return missing


def conv_nodes(model: Any) -> list[str]:
    """The Conv node names of a converted graph, in order: the table's fingerprint of the model."""
    return [n.name for n in model.graph.node if n.op_type == "Conv"]


def table_fits(fp32: Path) -> bool:
    """Whether the table was made for this graph (same Conv nodes): cheap, no quantizer involved."""
    import onnx

    try:
        model = onnx.load(str(fp32), load_external_data=False)
    except Exception:  # not ours to judge here: the engine reports unreadable models
        return False
    return conv_nodes(model) == ranges_table()["conv_nodes"]


def _digest(fp32: Path) -> str:
    parts = (sha256_file(fp32), sha256_file(RANGES_FILE), QUANTIZER_VERSION)
    return hashlib.sha256(":".join(parts).encode()).hexdigest()[:16]


def copy_dir(fp32: Path) -> Path:
    """Where INT8 copies of ``fp32`` go: ``derived/`` beside it (for the pulled model, the cache's),
    else, when that folder cannot be written, the cache's ``derived/``."""
    from privacy_filter.models.registry import derived_dir

    return fp32.parent / "derived" if os.access(fp32.parent, os.W_OK) else derived_dir()


def int8_path(fp32: Path, dst_dir: Path) -> Path:
    """Where the INT8 copy of ``fp32`` lives: keyed by the model, the table and the recipe."""
    return dst_dir / f"{fp32.stem}.{_digest(fp32)}.int8.onnx"


def int8_detector(fp32: Path, dst_dir: Path | None, input_name: str, *, required: bool) -> Path | None:
    """The INT8 copy of the detector ``fp32``: made on first use (~2 s), then found by content.

    ``required=False`` (``detector.precision: auto``): None, with a log line, when the table does
    not fit the model or the copy cannot be written or fails its check; the float model, which
    works, then runs.  ``required=True`` (``int8``): a ModelError naming the problem instead.
    ``dst_dir``: None for ``copy_dir(fp32)``.
    """
    dst = int8_path(fp32, copy_dir(fp32) if dst_dir is None else dst_dir)
    if dst.is_file():
        return dst
    if not required and not table_fits(fp32):
        log.info("detector %s: float (the INT8 calibration table is for the built-in nanodet only)", fp32)
        return None
    try:
        return _quantize(fp32, dst, input_name)
    except ModelError as exc:
        if required:
            raise
        log.warning("detector: running in float: %s", exc)  # auto: the float model is the fallback
        return None


def _quantize(fp32: Path, dst: Path, input_name: str) -> Path:
    """Make ``dst`` from ``fp32`` in a work folder beside it, renamed into place only when checked."""
    dst_dir = dst.parent
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    table = ranges_table()
    try:
        dst_dir.mkdir(parents=True, exist_ok=True)
        work_dir = tempfile.TemporaryDirectory(prefix="pf-int8-", dir=dst_dir)
    except OSError as exc:
        raise ModelError(f"cannot write the detector's INT8 copy in {dst_dir}: {exc.strerror or exc}") from None
    with work_dir as work:
        pre = Path(work) / "pre.onnx"
        out = Path(work) / "int8.onnx"
        try:
            # shape inference and ORT's basic graph fusions (Pad into Conv) first, as the quantizer
            # expects; the table's tensor names are those of this pre-processed graph
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            model = onnx.load(str(pre))
        except Exception as exc:
            raise ModelError(f"{fp32}: cannot prepare the model for INT8 ({type(exc).__name__}: {exc}); set detector.precision: fp32") from None
        missing = missing_ranges(model, table)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ModelError(
                f"{fp32}: the INT8 calibration table ({RANGES_FILE.name}) has no range for {shown}: it fits only the "
                "built-in nanodet as `privacy-filter models pull` converts it; set detector.precision: fp32 for this model"
            )
        shape = next(i for i in model.graph.input if i.name == input_name).type.tensor_type.shape
        channels = shape.dim[1].dim_value or 3
        del model

        class _Neutral(CalibrationDataReader):
            """One all-zero input (the mean colour after normalisation): every range is overridden."""

            def __init__(self) -> None:
                self.left = 1

            def get_next(self) -> dict[str, np.ndarray] | None:
                if not self.left:
                    return None
                self.left = 0
                return {input_name: np.zeros((1, channels, 64, 64), np.float32)}

        overrides = {name: [{"rmin": np.float32(lo), "rmax": np.float32(hi)}] for name, (lo, hi) in table["tensors"].items()}
        say(f"making the detector's INT8 copy for the CPU, once ({dst}; docs/cctv.md, 'INT8 detector')", progress=True)
        try:
            quantize_static(
                str(pre),
                str(out),
                _Neutral(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                per_channel=True,
                reduce_range=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=table["float_nodes"],
                extra_options={"TensorQuantOverrides": overrides},
            )
        except Exception as exc:  # the quantizer raises plain Exceptions of many kinds
            raise ModelError(f"{fp32}: INT8 quantization failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); set detector.precision: fp32") from None
        error = relative_error(fp32, out, input_name)
        if error > SELF_CHECK_MAX:
            raise ModelError(
                f"{fp32}: its INT8 copy disagrees with the float model (mean relative error {error:.2f} > {SELF_CHECK_MAX} on the check "
                "picture): not used; set detector.precision: fp32 and report the onnxruntime version"
            )
        out.replace(dst)
    return dst


#: The INT8 copy's largest mean relative output error on ``check_picture`` (measured: 0.19 for the
#: committed table; 0.36-0.82 when the quantizer ignored the table and calibrated on its neutral
#: picture, which found nobody on real frames).
SELF_CHECK_MAX = 0.3


def check_picture() -> np.ndarray:
    """A fixed smooth pseudo-random input (1, 3, 384, 640), in the detector's normalised range."""
    import cv2

    coarse = np.random.default_rng(0).normal(0.0, 1.0, (3, 48, 80)).astype(np.float32)
    return np.stack([cv2.resize(c, (640, 384), interpolation=cv2.INTER_CUBIC) for c in coarse])[None]


def relative_error(fp32: Path, int8: Path, input_name: str) -> float:
    """The worst output's mean |int8 - fp32| / mean |fp32| on ``check_picture``: a gross-breakage
    check run once when a copy is made (a wrong range moves every output, not a few)."""
    import onnxruntime as ort

    x = check_picture()
    runs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {input_name: x}) for p in (fp32, int8)]
    return max(float(np.abs(a - b).mean() / (np.abs(a).mean() + 1e-6)) for a, b in zip(*runs, strict=True))
