"""``F.unfold`` / ``F.fold`` (and ``nn.Unfold`` / ``nn.Fold``, which call them) on symbolic sizes.

PyTorch's ``im2col`` / ``col2im`` read the real sizes, so a symbolic run would pin every input
size to its value (``Eq(H, 16)``) and each size would become its own case. Here the output shape
comes from PyTorch's formula instead, and the kernel's shape checks (``im2col_shape_check`` and
``col2im_shape_check`` in ATen) become comparisons on the SymInts, which the ShapeEnv records as
guards at the user's line: what fails in PyTorch fails here, at the same sizes.

Only calls with a symbolic size take this path; literal sizes, and dtypes the CPU kernels do not
take (integers), keep PyTorch's own op.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

_UNFOLD_PARAMS = ("input", "kernel_size", "dilation", "padding", "stride")
_FOLD_PARAMS = ("input", "output_size", "kernel_size", "dilation", "padding", "stride")
_DEFAULTS = {"dilation": 1, "padding": 0, "stride": 1}


def unfold(args: tuple, kwargs: dict) -> Any:
    """``F.unfold``: (N, C, H, W) or (C, H, W) -> (N, C*kh*kw, L), L the number of blocks."""
    bound = _bind(_UNFOLD_PARAMS, args, kwargs)
    geometry = _geometry(bound, ("kernel_size", "dilation", "padding", "stride"))
    x = bound.get("input")
    if geometry is None or not _formula_applies(x, bound):
        return F.unfold(*args, **kwargs)
    k, d, p, s = geometry
    _check_geometry(k, d, p, s)
    if x.dim() not in (3, 4) or any(n == 0 for n in x.shape[x.dim() - 3:]):
        raise RuntimeError("Expected 3D or 4D (batch mode) tensor with possibly 0 batch size and "
                           f"other non-zero dimensions for input, but got: {list(x.shape)}")
    c, h, w = x.shape[x.dim() - 3:]
    blocks = [_blocks(n, k[i], d[i], p[i], s[i]) for i, n in enumerate((h, w))]
    if blocks[0] < 1 or blocks[1] < 1:
        raise RuntimeError(f"Given input with spatial size ({h}, {w}), kernel_size={tuple(k)}, "
                           f"dilation={tuple(d)}, padding={tuple(p)}, calculated shape of the "
                           f"array of sliding blocks as ({blocks[0]}, {blocks[1]}), but its "
                           "components must be at least one.")
    shape = [c * k[0] * k[1], blocks[0] * blocks[1]]
    return x.new_empty(shape if x.dim() == 3 else [x.shape[0], *shape])


def fold(args: tuple, kwargs: dict) -> Any:
    """``F.fold``: (N, C*kh*kw, L) or (C*kh*kw, L) -> (N, C, oH, oW) with (oH, oW) the given
    output size; L must be the number of blocks that output size has."""
    bound = _bind(_FOLD_PARAMS, args, kwargs)
    geometry = _geometry(bound, ("output_size", "kernel_size", "dilation", "padding", "stride"))
    x = bound.get("input")
    if geometry is None or not _formula_applies(x, bound):
        return F.fold(*args, **kwargs)
    out, k, d, p, s = geometry
    _check_geometry(k, d, p, s)
    if x.dim() not in (2, 3) or any(n == 0 for n in x.shape[x.dim() - 2:]):
        raise RuntimeError("Expected 2D or 3D (batch mode) tensor for input with possibly 0 batch "
                           "size and non-zero dimensions for input, but got: "
                           f"{list(x.shape)}")
    planes, length = x.shape[x.dim() - 2:]
    if planes % (k[0] * k[1]) != 0:
        raise RuntimeError("Expected size of input's dimension 1 to be divisible by the product "
                           f"of kernel_size, but got input.size(1)={planes} and "
                           f"kernel_size={tuple(k)}.")
    blocks = [_blocks(out[i], k[i], d[i], p[i], s[i]) for i in range(2)]
    if length != blocks[0] * blocks[1]:
        raise RuntimeError(f"Given output_size={tuple(out)}, kernel_size={tuple(k)}, "
                           f"dilation={tuple(d)}, padding={tuple(p)}, stride={tuple(s)}, expected "
                           "size of input's dimension 2 to match the calculated number of "
                           f"sliding blocks {blocks[0]} * {blocks[1]}, but got "
                           f"input.size(2)={length}.")
    if blocks[0] < 1 or blocks[1] < 1:
        raise RuntimeError(f"Given output_size={tuple(out)}: calculated shape of the array of "
                           f"sliding blocks as ({blocks[0]}, {blocks[1]}), which is too small "
                           "(non-positive)")
    if out[0] < 1 or out[1] < 1:
        raise RuntimeError("Expected output spatial size to be positive, but got: "
                           f"output_size={tuple(out)}.")
    shape = [planes // (k[0] * k[1]), out[0], out[1]]
    return x.new_empty(shape if x.dim() == 2 else [x.shape[0], *shape])


def _bind(params: tuple[str, ...], args: tuple, kwargs: dict) -> dict:
    bound = dict(_DEFAULTS)
    bound.update(zip(params, args))
    bound.update(kwargs)
    return bound


def _geometry(bound: dict, names: tuple[str, ...]) -> list[list[Any]] | None:
    """Each parameter as a pair (``_pair`` as F.unfold applies it), or None when one is missing
    or not a pair: PyTorch's own op then says what is wrong."""
    pairs = []
    for name in names:
        v = bound.get(name)
        v = list(v) if isinstance(v, (list, tuple)) else [v, v]
        if len(v) != 2 or not all(isinstance(e, (int, torch.SymInt)) for e in v):
            return None
        pairs.append(v)
    return pairs


def _formula_applies(x: Any, bound: dict) -> bool:
    """A tensor of a dtype the kernels take, with a symbolic size here (its own or a parameter)."""
    if not isinstance(x, torch.Tensor):
        return False
    if not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        return False  # integers: the CPU kernels raise, PyTorch's op says so
    values = list(x.shape) + [e for name, v in bound.items() if name != "input"
                              for e in (v if isinstance(v, (list, tuple)) else [v])]
    return any(isinstance(v, torch.SymInt) for v in values)


def _check_geometry(k: list, d: list, p: list, s: list) -> None:
    for name, pair, ok in (("kernel size", k, lambda v: v > 0), ("dilation", d, lambda v: v > 0),
                           ("padding", p, lambda v: v >= 0), ("stride", s, lambda v: v > 0)):
        if not (ok(pair[0]) and ok(pair[1])):
            raise RuntimeError(f"{name} should be "
                               f"{'non-negative' if name == 'padding' else 'greater than zero'}"
                               f", but got {tuple(pair)}")


def _blocks(n: Any, k: Any, d: Any, p: Any, s: Any) -> Any:
    """Sliding blocks along one axis: floor((n + 2p - d(k - 1) - 1) / s) + 1 (div_rtn: floor)."""
    return (n + 2 * p - d * (k - 1) - 1) // s + 1
