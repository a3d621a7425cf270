"""Turn what the user typed after ``--model`` into a validated (spec, ONNX file) pair.

Accepted forms:

* nothing → ``selfie`` (the embedded default, pulled and converted on first use);
* a built-in name: ``selfie``, ``selfie-landscape``;
* ``peoplesemsegnet-shuffleseg:/path/model.onnx`` (built-in spec, user-supplied file; same for
  ``peoplesemsegnet-vanilla``; a ``+soft`` suffix on the name exposes the pre-ArgMax logits);
* a spec YAML (``onnx:`` key + fields), a DeepStream nvinfer ``.txt``/``.yml`` config;
* a bare ``.onnx`` whose I/O matches a built-in contract.

Every result has been checked against its ONNX file, so engines can trust it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from privacy_filter.errors import ModelError
from privacy_filter.models import onnx_tools
from privacy_filter.models.specs import BUILTIN_SPECS, DETECTOR_SPECS, DetectorSpec, ModelSpec, load_deepstream_config, load_spec_yaml

DEFAULT_MODEL = "selfie"
EMBEDDED = ("selfie", "selfie-landscape")
SOFT_SUFFIX = "+soft"


@dataclass(frozen=True)
class ResolvedModel:
    spec: ModelSpec
    onnx_path: Path


def known_names() -> list[str]:
    return list(BUILTIN_SPECS)


def derived_dir() -> Path:
    """Where derived files (rewritten ONNX) go: beside the default model's cache (models.pull)."""
    from privacy_filter.models.pull import cache_dir

    return cache_dir() / "derived"


def _embedded_path(name: str) -> Path:
    from privacy_filter.models.pull import default_model_path

    return Path(default_model_path(name=name, auto_pull=True))


def _finish(spec: ModelSpec, path: Path) -> ResolvedModel:
    """Complete the spec from the ONNX, validate, and apply the logits rewrite if asked."""
    if not path.is_file():
        raise ModelError(f"model file not found: {path}")
    io = onnx_tools.read_io(path)
    spec = onnx_tools.complete_spec(spec, io)
    onnx_tools.validate_spec(spec, io, path)
    if spec.expose_logits:
        exposed = onnx_tools.expose_argmax_logits(path, spec.output_name, derived_dir())
        spec = spec.model_copy(
            update={
                "output_name": exposed.output_name,
                "output_kind": "logits",
                "output_layout": exposed.layout,
                "expose_logits": False,
            }
        )
        path = exposed.path
        onnx_tools.validate_spec(spec, onnx_tools.read_io(path), path)
    return ResolvedModel(spec, path)


def _match_builtin(io: onnx_tools.OnnxIO) -> ModelSpec | None:
    """The built-in spec whose named tensors a bare ONNX carries (PeopleSemSegNet files)."""
    for spec in BUILTIN_SPECS.values():
        if spec.input_name and io.input(spec.input_name) and io.output(spec.output_name):
            return spec
    return None


def resolve_model(name_or_path: str | None) -> ResolvedModel:
    """Resolve ``--model``; raises ModelError naming the problem (unknown name, missing file, mismatch)."""
    text = (name_or_path or DEFAULT_MODEL).strip()
    name, sep, rest = text.partition(":")
    soft = name.endswith(SOFT_SUFFIX)
    base_name = name[: -len(SOFT_SUFFIX)] if soft else name
    if base_name in BUILTIN_SPECS and (sep or base_name in EMBEDDED):
        spec = BUILTIN_SPECS[base_name]
        if soft:
            spec = spec.model_copy(update={"expose_logits": True})
        if base_name in EMBEDDED:
            path = Path(rest).expanduser() if rest else _embedded_path(base_name)
        else:
            path = Path(rest).expanduser()
        return _finish(spec, path)
    if base_name in BUILTIN_SPECS:
        raise ModelError(f"model {base_name!r} is not shipped (NVIDIA's licence); give its ONNX file as '{base_name}:/path/to/model.onnx' or use a DeepStream config / spec YAML")

    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".txt", ".onnx"):
        if not path.is_file():
            raise ModelError(f"model file not found: {path}")
        if suffix == ".txt":
            spec, onnx = load_deepstream_config(path)
            return _finish(spec, onnx)
        if suffix in (".yaml", ".yml"):
            spec, onnx = load_spec_yaml(path)
            return _finish(spec, onnx)
        spec = _match_builtin(onnx_tools.read_io(path))
        if spec is None:
            raise ModelError(
                f"{path}: no built-in spec matches this ONNX's I/O "
                f"({', '.join(str(t) for t in onnx_tools.read_io(path).inputs)}); "
                "describe it with a spec YAML or DeepStream config"
            )
        return _finish(spec, path)
    if path.exists():  # a real file, just not one a model can be read from: "unknown model" would send the user looking for a typo
        what = "a folder" if path.is_dir() else f"a {suffix or 'suffix-less'} file"
        raise ModelError(f"{path} is {what}, not a model: give an .onnx file, a spec .yaml or a DeepStream config (.txt/.yml), or a name: {', '.join(known_names())}")
    raise ModelError(f"unknown model {text!r}; known names: {', '.join(known_names())} (or a path to .onnx / spec .yaml / DeepStream .txt/.yml)")


# ---------------------------------------------------------------------------------------------
# detectors

DEFAULT_DETECTOR = "nanodet"


@dataclass(frozen=True)
class ResolvedDetector:
    spec: DetectorSpec
    onnx_path: Path


def validate_detector(spec: DetectorSpec, path: Path) -> None:
    """ModelError unless the ONNX at ``path`` has the spec's input and every per-stride output."""
    io = onnx_tools.read_io(path)
    missing = [n for n in (spec.input_name,) if io.input(n) is None]
    missing += [n for n in (*spec.score_outputs, *spec.box_outputs) if io.output(n) is None]
    if missing:
        raise ModelError(f"{path}: not a {spec.name} detector; missing tensor(s) {', '.join(missing)} (has inputs {', '.join(str(t) for t in io.inputs)})")


def resolve_detector(name_or_path: str | None) -> ResolvedDetector:
    """Resolve a detector: ``nanodet`` (pulled and converted on first use), ``nanodet:/path.onnx``,
    or a bare ``.onnx`` with NanoDet's I/O.  Raises ModelError naming the problem."""
    text = (name_or_path or DEFAULT_DETECTOR).strip()
    name, sep, rest = text.partition(":")
    if name in DETECTOR_SPECS:
        spec = DETECTOR_SPECS[name]
        if sep and rest:
            path = Path(rest).expanduser()
        else:
            from privacy_filter.models.detector_pull import detector_model_path

            path = detector_model_path(name, auto_pull=True)
    else:
        path = Path(text).expanduser()
        if path.suffix.lower() != ".onnx":
            raise ModelError(f"unknown detector {text!r}; known: {', '.join(DETECTOR_SPECS)} (or a path to a .onnx)")
        spec = DETECTOR_SPECS[DEFAULT_DETECTOR]
    if not path.is_file():
        raise ModelError(f"detector model file not found: {path}")
    validate_detector(spec, path)
    return ResolvedDetector(spec, path)
