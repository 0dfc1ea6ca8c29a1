"""The truth for the sizes tests: PyTorch run for real, and which sizes to run it at.

``runs`` is a real forward on CPU under ``torch.inference_mode`` (no autograd bookkeeping); the
suite's ``one_thread`` fixture (conftest.py) keeps it on one thread. ``square_sample`` is the
principled sample of square sizes used for the large real networks, where a forward at every
size 1..256 costs minutes (see its docstring for why it still catches a wrong claim).
"""

from __future__ import annotations

import math
import warnings
from typing import Iterable


def runs(model, *args, **kwargs) -> bool:
    """Whether ``model(*args, **kwargs)`` works in PyTorch (any exception is a failure)."""
    import torch

    try:
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model(*args, **kwargs)
        return True
    except Exception:  # the truth includes every way a forward fails
        return False


def runs_at(model, shape) -> bool:
    """Whether ``model`` runs on zeros of ``shape``."""
    import torch

    return runs(model, torch.zeros(shape))


def total_stride(model) -> int:
    """The product of every stride > 1 of the model's convolutions and pools (per layer, the
    largest over its axes): a multiple of the model's total downsampling, so every divisibility
    the layers impose on the input size has a period dividing it."""
    stride = 1
    for module in model.modules():
        s = getattr(module, "stride", None)
        if isinstance(s, int):
            s = (s,)
        if isinstance(s, tuple) and s and all(isinstance(v, int) for v in s):
            stride *= max(s)
    return stride


def progression_edges(progs: Iterable[dict], upto: int) -> set[int]:
    """The first and last size of each progression and the sizes right next to them."""
    out: set[int] = set()
    for p in progs:
        start, stop, step = p["start"], p["stop"], p["step"]
        out |= {start - 1, start, start + 1, start + step}
        if stop is not None:
            last = start + (stop - 1 - start) // step * step
            out |= {last - step, last - 1, last, last + 1}
    return {n for n in out if 1 <= n <= upto}


def square_sample(table: dict, model, *, every_upto: int, top: int, edges_upto: int) -> list[int]:
    """Square sizes at which to compare a claimed admissible set with real runs.

    - every size 1..``every_upto`` (where the edges and the irregular prefix of a claim are);
    - above it, up to ``top``: the first and the last size of every residue class modulo
      ``period``, the lcm of the model's total stride and every step the claim uses. The claim is
      periodic there with a period dividing ``period``, and so is the truth wherever it comes from
      the model's strides; if the two differ at some size above ``every_upto`` they differ on its
      whole residue class, which the sample contains (first and last, so a failure that starts
      only at large sizes shows too);
    - the edges (first, last, and both neighbours) of every claimed or undecided progression up
      to ``edges_upto``, so a boundary placed one size off fails the test.
    """
    progs = [*table["square"], *table["undecided"]["square"]]
    period = math.lcm(total_stride(model), *(p["step"] for p in progs))
    sizes = set(range(1, every_upto + 1))
    above = range(every_upto + 1, top + 1)
    if period >= len(above) // 2:
        sizes |= set(above)
    else:
        sizes |= set(above[:period]) | set(above[-period:])
    return sorted(sizes | progression_edges(progs, edges_upto))


def model_from_file(path, name: str, prefix: str = "_real"):
    """The model ``name`` of a model file (a class is instantiated), in eval mode."""
    from archgen import load_module

    obj = getattr(load_module(path, f"{prefix}_{path.stem}"), name)
    return (obj() if isinstance(obj, type) else obj).eval()


_LINTED: dict[str, object] = {}


def lint_once(path):
    """The Report of one model file under the default options, linted once per session:
    several modules check the same fixtures (sizes, batch locks, fields, real runs). Read-only."""
    from archlint.api import lint

    key = str(path)
    if key not in _LINTED:
        _LINTED[key] = lint(key)
    return _LINTED[key]


def linted(path) -> list:
    """The ModelReports of :func:`lint_once`."""
    return lint_once(path).models
