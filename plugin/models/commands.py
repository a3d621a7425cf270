"""``privacy-filter models list|pull|inspect``."""

from __future__ import annotations

import argparse

from privacy_filter.models import onnx_tools
from privacy_filter.models.registry import EMBEDDED, resolve_model
from privacy_filter.models.specs import BUILTIN_SPECS


def cmd_list(args: argparse.Namespace) -> int:
    from privacy_filter.models.pull import cache_dir, cached_problem

    directory = cache_dir()
    print(f"{'name':<28} {'input':<22} {'output':<10} status")
    for name, spec in BUILTIN_SPECS.items():
        size = f"{spec.height}x{spec.width} {spec.color.upper()}"
        if name in EMBEDDED:
            try:
                problem = cached_problem(directory, name)
            except Exception as exc:  # an unreadable manifest is reported, never fatal here
                problem = f"cache unreadable ({exc})"
            status = "cached" if problem is None else f"{problem}; pulled on first use"
        else:
            status = f"user-supplied: --model {name}:/path/to/model.onnx"
        print(f"{name:<28} {size:<22} {spec.output_kind:<10} {status}")
    print(f"cache: {directory}")
    print("custom: --model spec.yaml | pgie_config.txt | pgie_config.yml ('+soft' after a name exposes "
          "pre-ArgMax logits)")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from privacy_filter.models.pull import pull_default_models

    paths = pull_default_models(source=args.source, force=bool(args.force), progress=True)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    resolved = resolve_model(args.model)
    io = onnx_tools.read_io(resolved.onnx_path)
    print(f"file  : {resolved.onnx_path}")
    print(f"opset : {io.opset}")
    for t in io.inputs:
        print(f"input : {t}")
    for t in io.outputs:
        print(f"output: {t}" + (f"  (from {io.producers[t.name]})" if io.producers.get(t.name) else ""))
    print(resolved.spec.describe())
    return 0
