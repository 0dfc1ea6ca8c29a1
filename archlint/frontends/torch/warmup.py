"""Import-time tuning of torch for meta-tensor capture: defer torch._dynamo, warm up meta kernels."""


from __future__ import annotations

import sys
import types
import warnings
from typing import Any, Callable

import torch
import torch.nn.functional as F


def _defer_dynamo_import() -> None:
    """Stop the Python meta kernels from importing torch._dynamo (~1 s CPU) when nothing compiles.

    Most meta kernels are Python references wrapped in ``torch._disable_dynamo``, whose first
    call imports torch._dynamo only to build a "run this uncompiled" wrapper, and caches that
    wrapper on the function as ``__dynamo_disable``. We pre-fill that cache with a wrapper that
    calls the reference directly while torch._dynamo is not loaded (then nothing can be compiling
    it) and builds the real one, exactly as torch would, once it is. Behaviour is unchanged; only
    an import that cannot matter is skipped. If torch changes these internals, nothing matches
    and the import simply happens as before.
    """
    import gc

    from torch import _compile

    inner_code = _compile._disable_dynamo(lambda: None).__code__
    if inner_code.co_freevars != ("fn", "recursive"):
        return
    for obj in gc.get_objects():
        if type(obj) is types.FunctionType and obj.__code__ is inner_code and obj.__closure__:
            fn, recursive = (cell.cell_contents for cell in obj.__closure__)
            if getattr(fn, "__dynamo_disable", None) is None:
                fn.__dynamo_disable = _lazy_dynamo_disable(fn, recursive)


def _lazy_dynamo_disable(fn: Callable[..., Any], recursive: bool) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        if "torch._dynamo" not in sys.modules:
            return fn(*args, **kwargs)
        disabled = torch._dynamo.disable(fn, recursive, wrapping=False)  # what torch caches
        fn.__dynamo_disable = disabled
        return disabled(*args, **kwargs)

    return call


def _warm_up_meta_kernels() -> None:
    """Run a few meta ops once at import, so that the first model does not pay the imports their
    first calls make (sympy, through ``torch._check``): the CLI imports this module before
    starting a target's time limit."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = torch.empty(1, 2, 4, 4, device="meta")
            stats = torch.empty(2, device="meta")
            y = torch.relu(x + x)
            F.batch_norm(y, stats, stats, training=False)
            torch.cat([y, x], 1).mean((2, 3))
    except Exception:  # a warm-up must never cost the import
        pass


_defer_dynamo_import()
_warm_up_meta_kernels()
