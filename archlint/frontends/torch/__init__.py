"""PyTorch frontend: a ``.py`` file or an ``nn.Module`` -> archlint graphs.

Steps for one file:

1. import it as a fresh module (under its dotted name inside its package, with the project's
   import roots on ``sys.path``: :mod:`archlint.project`), recording where every ``nn.Module``
   object is constructed;
2. find the models (``--model NAME`` or ``[tool.archlint] models``, each with its constructor
   arguments, else module-level instances, else zero-argument ``nn.Module`` subclasses defined in
   the file that no other model class of the file uses) and build classes on the meta device;
3. choose the example input (``--input-shape``, ``example_inputs``, ``example_input`` in the file,
   ``[tool.archlint]``, else a shape inferred from the first layer; plus ``example_kwargs``; dicts
   and lists of tensors become one placeholder per tensor);
4. trace with ``torch.fx`` (stack traces on) and propagate shapes node by node on meta tensors,
   keeping going past a failing node; when fx cannot trace, run ``forward`` on meta tensors under
   a ``TorchFunctionMode`` instead;
5. describe every op in the IR of :mod:`archlint.graph`.

Graph-level keys this frontend adds to ``g.graph`` (besides the IR's own):

``module_factory``  zero-argument callable that rebuilds the model with real weights (the class or
                    factory the model came from), or None when the model is a given instance;
``module``          that instance (module-level or passed to :func:`capture_module`), else None;
``traced_module``   the object that was traced (meta-built unless the user gave it);
``graph_module``    the ``fx.GraphModule`` traced from it (None after an eager capture);
``fx_names``        fx node name -> IR node name (re-trace with :func:`trace` to get the same
                    names on a real module);
``input_dtypes``    dtype name per input (``int64`` for a model whose first layer is Embedding).
``input_names``     one name per input tensor (``x``, ``batch_image``, ``mask``).
``input_structured`` True when forward takes a dict, a list or keyword inputs (traced with one
                    placeholder per tensor; ``--confirm`` runs it only through the fx graph).

The frontend describes; it never judges. Only this package imports torch.

Files, in the order a capture uses them:

``warmup``      import-time tuning of torch (deferred torch._dynamo, warmed meta kernels);
``discovery``   import the file, find and build its models;
``inputs``      choose the example input;
``capture``     the entry points; fx trace or eager capture of one model;
``shape_prop``  run the fx graph on meta tensors, node by node;
``builder``     fx nodes -> IR nodes;
``opcall``      one call's bound arguments and shared normalizers;
``op_attrs``    one call -> op kind, Attrs, origin;
``parity``      checks meta kernels skip, and PyTorch's own error messages;
``eager``       the TorchFunctionMode capture used when fx cannot trace;
``locate``      source lines: construction sites, forward lines, user frames.
"""

from __future__ import annotations

from archlint.frontends.torch import warmup as _warmup  # noqa: F401  (runs the warm-up once)
from archlint.frontends.torch.capture import (
    _ArchlintTracer,
    capture_file,
    capture_module,
    trace,
)

__all__ = ["capture_file", "capture_module", "trace", "_ArchlintTracer"]
