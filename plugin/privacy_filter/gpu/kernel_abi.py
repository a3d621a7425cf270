"""The argument contract of the ``extern "C" __global__`` kernels in ``kernels/*.cu``.

CuPy turns a Python ``int`` into a 64-bit ``long long`` and a ``float`` into a ``double``.
Passed to a kernel whose parameter is ``int`` or ``float`` that reads the wrong bytes and
gives a silently wrong picture, never an error.  Both launchers of this project (the CuPy
backend in ``effects/cuda.py`` and the host emulation in ``gpu_emulation.py``) therefore
parse the kernel signatures from the source and check every launch against them here:
scalars must be exactly the NumPy scalar type of the C parameter, arrays must have the
element dtype of the C pointer.  Pure Python, no CuPy import, so it runs everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# C parameter type (qualifiers removed) -> NumPy dtype.  Only what the kernels use.
_C_TYPES: dict[str, type[np.generic]] = {
    "int": np.int32,
    "unsigned int": np.uint32,
    "unsigned": np.uint32,
    "float": np.float32,
    "long long": np.int64,
    "unsigned char": np.uint8,
    "signed char": np.int8,
    "unsigned short": np.uint16,
    "short": np.int16,
    "double": np.float64,
    "unsigned long long": np.uint64,
    # typedefs of kernels/common.cuh
    "u8": np.uint8,
    "u16": np.uint16,
}

_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+(\w+)\s*\(([^)]*)\)', re.DOTALL)
_COMMENT_RE = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its name, C base type and whether it is a pointer."""

    name: str
    ctype: str  # base type without qualifiers, e.g. "unsigned char"
    pointer: bool
    decl: str  # the declared type as written, minus __restrict__ (used by the emulator's wrapper)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_C_TYPES[self.ctype])


@dataclass(frozen=True)
class KernelSignature:
    name: str
    params: tuple[Param, ...]
    body: str  # the kernel body text (used to decide whether it needs fibers)

    @property
    def uses_syncthreads(self) -> bool:
        return "__syncthreads" in self.body


_INCLUDE_RE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.MULTILINE)


def expand_includes(source: str, directory: Path, _seen: frozenset[str] = frozenset()) -> str:
    """The source with every ``#include "x.cuh"`` replaced by the file's text (recursively).

    CuPy's kernel cache is keyed on the source string only, so a kernel that #includes a
    header would be served stale after the header changes.  The backend therefore hands
    NVRTC one self-contained string.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name in _seen:
            return ""
        path = directory / name
        if not path.is_file():
            raise FileNotFoundError(f'#include "{name}" not found in {directory}')
        return f"// ---- begin {name}\n" + expand_includes(path.read_text(), directory, _seen | {name}) + f"\n// ---- end {name}\n"

    return _INCLUDE_RE.sub(repl, source)


def strip_comments(source: str) -> str:
    return _COMMENT_RE.sub(" ", source)


def _parse_param(text: str, kernel: str) -> Param:
    text = " ".join(text.replace("*", " * ").split())
    m = re.match(r"^(.*?)(\w+)$", text)
    if not m:
        raise ValueError(f"kernel {kernel}: cannot parse parameter {text!r}")
    type_part, name = m.group(1), m.group(2)
    pointer = "*" in type_part
    decl = " ".join(t for t in type_part.split() if t not in ("__restrict__", "__restrict"))
    base = " ".join(t for t in decl.split() if t not in ("const", "volatile", "*"))
    if base not in _C_TYPES:
        raise ValueError(f"kernel {kernel}: parameter {name!r} has unsupported type {base!r}")
    return Param(name=name, ctype=base, pointer=pointer, decl=decl)


def _body_after(source: str, start: int) -> str:
    """The brace-balanced body of the function whose signature ends at ``start``."""
    i = source.index("{", start)
    depth = 0
    for j in range(i, len(source)):
        if source[j] == "{":
            depth += 1
        elif source[j] == "}":
            depth -= 1
            if depth == 0:
                return source[i : j + 1]
    raise ValueError("unbalanced braces in kernel source")


def parse_kernels(source: str) -> dict[str, KernelSignature]:
    """All ``extern "C" __global__`` kernels of a CUDA source, by name."""
    src = strip_comments(source)
    out: dict[str, KernelSignature] = {}
    for m in _KERNEL_RE.finditer(src):
        name, plist = m.group(1), m.group(2).strip()
        params = tuple(_parse_param(p, name) for p in plist.split(",")) if plist else ()
        out[name] = KernelSignature(name, params, _body_after(src, m.end()))
    return out


def check_args(sig: KernelSignature, args: Sequence[Any]) -> None:
    """Raise TypeError unless ``args`` match ``sig`` exactly (count, scalar types, array dtypes).

    Arrays are anything with a ``dtype`` and ``ndim`` (NumPy or CuPy).  A Python ``int`` or
    ``float`` is always refused for a scalar parameter, because CuPy would widen it.
    """
    if len(args) != len(sig.params):
        raise TypeError(f"kernel {sig.name} takes {len(sig.params)} arguments, got {len(args)}")
    for i, (p, a) in enumerate(zip(sig.params, args)):
        where = f"kernel {sig.name} argument {i} ({p.decl} {p.name})"
        if p.pointer:
            if not (hasattr(a, "dtype") and hasattr(a, "ndim")) or isinstance(a, np.generic):
                raise TypeError(f"{where}: expected an array of {p.dtype}, got {type(a).__name__}")
            if np.dtype(a.dtype) != p.dtype:
                raise TypeError(f"{where}: expected an array of {p.dtype}, got {a.dtype}")
        else:
            want = _C_TYPES[p.ctype]
            if type(a) is not want:
                hint = f"; wrap it as np.{want.__name__}(...)" if isinstance(a, (int, float, np.generic)) else ""
                raise TypeError(f"{where}: expected np.{want.__name__}, got {type(a).__name__}{hint}")
