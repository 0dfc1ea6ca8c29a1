"""One op call (module, function or method) with its bound arguments, plus the small normalizers
(per-axis ints and pairs, origins) that the op mappers share."""


from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils import _pytree as pytree


class _Failed:
    """The value of a node whose shape propagation failed (here or upstream)."""

    def __repr__(self) -> str:
        return "<failed>"


FAILED = _Failed()


def _has_tensor(value: Any) -> bool:
    return any(isinstance(v, torch.Tensor) for v in pytree.tree_leaves(value))


def _shapes_of(value: Any) -> tuple[tuple[int, ...], ...] | None:
    shapes = tuple(tuple(v.shape) for v in pytree.tree_leaves(value) if isinstance(v, torch.Tensor))
    return shapes or None




@dataclass
class OpCall:
    """One call as both tracers see it.

    ``values`` are the concrete argument values bound to parameter names (meta tensors, ints);
    ``raw`` are the same arguments as the tracer wrote them (fx Nodes where a value was
    computed at run time), or ``values`` again for the eager path.
    """

    kind: str  # "module" | "function" | "method"
    target: Any
    args: tuple
    kwargs: dict
    raw_args: tuple
    raw_kwargs: dict
    #: IR node that produced a raw argument, for activations.
    producer: Callable[[Any], str | None] = lambda raw: None
    #: the single IR tensor a raw non-tensor value (a size) was computed from, else None.
    size_source: Callable[[Any], str | None] = lambda raw: None
    #: whether a raw value was computed at run time (from a tensor's size).
    is_runtime: Callable[[Any], bool] = lambda raw: False
    #: spatial sizes of an IR node's main output, when known.
    spatial_of: Callable[[str], tuple[int, ...] | None] = lambda name: None
    #: a constant operand's origin (the parameter or buffer it comes from), for messages.
    constant_name: Callable[[Any], str] = lambda raw: "a constant"
    #: whether a constant operand was computed using an activation's size at run time
    #: (interpolated or built to the grid), so it follows the input size.
    sized_from_activation: Callable[[Any], bool] = lambda raw: False
    #: the real value of a parameter or buffer operand (None: not one, or built on meta)
    constant_value: Callable[[Any], Any] = lambda raw: None
    module: nn.Module | None = None
    bound: dict[str, Any] = field(default_factory=dict)
    bound_raw: dict[str, Any] = field(default_factory=dict)

    def bind(self, params: tuple[str, ...], defaults: dict[str, Any] | None = None) -> None:
        self.bound = _bind(params, self.args, self.kwargs, defaults or {})
        self.bound_raw = _bind(params, self.raw_args, self.raw_kwargs, defaults or {})

    def get(self, name: str, default: Any = None) -> Any:
        return self.bound.get(name, default)

    def input_rank(self) -> int | None:
        x = self.args[0] if self.args else None
        return x.dim() if isinstance(x, torch.Tensor) else None


def _bind(params: tuple[str, ...], args: tuple, kwargs: dict, defaults: dict[str, Any]) -> dict:
    """Arguments by parameter name; a ``*name`` parameter collects the rest as a tuple."""
    out = dict(defaults)
    for i, name in enumerate(params):
        if name.startswith("*"):
            out[name[1:]] = tuple(args[i:])
            break
        if i < len(args):
            out[name] = args[i]
    out.update(kwargs)
    return out


def _real_attr(gm: fx.GraphModule, raw: Any) -> Any:
    """A get_attr node's tensor in the traced module, when it holds real values."""
    if not isinstance(raw, fx.Node) or raw.op != "get_attr":
        return None
    obj: Any = gm
    for part in str(raw.target).split("."):
        obj = getattr(obj, part, None)
    return obj if isinstance(obj, torch.Tensor) and obj.device.type != "meta" else None


def _fx_call(
    n: fx.Node, gm: fx.GraphModule, env: dict, ir_of: dict[fx.Node, str],
    sources: dict[fx.Node, set[str]], g: Any,
) -> OpCall:
    def concrete(a: Any) -> Any:
        return fx.node.map_arg(a, lambda x: env.get(x, FAILED))

    def producer(raw: Any) -> str | None:
        return ir_of.get(raw) if isinstance(raw, fx.Node) else None

    def size_source(raw: Any) -> str | None:
        found: set[str] = set()
        fx.node.map_arg(raw, lambda x: found.update(sources.get(x, set())) or x)
        return next(iter(found)) if len(found) == 1 else None

    def is_runtime(raw: Any) -> bool:
        return isinstance(raw, fx.Node)

    def spatial_of(name: str) -> tuple[int, ...] | None:
        shapes = g.nodes[name]["shapes"] if name in g else None
        return tuple(shapes[0][2:]) if shapes else None

    def constant_name(raw: Any) -> str:
        node = raw
        seen = 0
        while isinstance(node, fx.Node) and node.op != "get_attr" and seen < 50:
            args = [a for a in node.all_input_nodes]
            node = args[0] if args else None
            seen += 1
        if isinstance(node, fx.Node) and node.op == "get_attr":
            return f"self.{node.target}"
        return raw.name if isinstance(raw, fx.Node) else "a constant"

    def sized_from_activation(raw: Any) -> bool:
        """True when a size read from an activation shaped this value beyond its batch dim
        (``F.interpolate(self.pos_embed, size=(h, w))``, ``torch.linspace(0, 1, h)``);
        ``cls_token.expand(B, -1, -1)`` does not count."""
        def reads_sizes(a: Any) -> bool:
            found = []
            fx.node.map_arg(a, lambda x: found.append(x) or x)
            return any(sources.get(x) or x in ir_of for x in found)

        stack, seen = [raw], set()
        while stack:
            node = stack.pop()
            if not isinstance(node, fx.Node) or node in seen:
                continue
            seen.add(node)
            if node.op == "get_attr" or node in ir_of:
                continue
            if _batch_only_use(node):  # expand(B, ...): the first size is the batch
                if reads_sizes((node.args[2:], node.kwargs)):
                    return True
                stack.append(node.args[0])
                continue
            if reads_sizes((node.args, node.kwargs)):
                return True
            stack.extend(node.all_input_nodes)
        return False

    kind = {"call_module": "module", "call_function": "function", "call_method": "method"}[n.op]
    target = gm.get_submodule(n.target) if n.op == "call_module" else n.target
    return OpCall(
        kind=kind,
        target=target,
        args=concrete(n.args),
        kwargs=concrete(n.kwargs),
        raw_args=n.args,
        raw_kwargs=dict(n.kwargs),
        producer=producer,
        size_source=size_source,
        is_runtime=is_runtime,
        spatial_of=spatial_of,
        constant_name=constant_name,
        sized_from_activation=sized_from_activation,
        constant_value=lambda raw: _real_attr(gm, raw),
        module=target if kind == "module" else None,
    )


_BATCH_ONLY = frozenset({"expand", "repeat"})


def _batch_only_use(node: fx.Node) -> bool:
    """``cls_token.expand(x.shape[0], -1, -1)``: the size read from x is only its batch."""
    return node.op == "call_method" and node.target in _BATCH_ONLY


def _module_origin(module: nn.Module) -> str:
    cls = type(module)
    if cls.__module__.startswith("torch.nn"):
        return f"nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


_ORIGIN_NAMES: dict[int, str] = {}


def _function_origin(fn: Any) -> str:
    if not _ORIGIN_NAMES:
        for prefix, namespace in (("operator", operator), ("torch", torch), ("F", F)):
            for name, obj in vars(namespace).items():
                if callable(obj) and not name.startswith("_"):
                    _ORIGIN_NAMES[id(obj)] = f"{prefix}.{name}"
    name = _ORIGIN_NAMES.get(id(fn))
    if name is not None:
        return name
    module = getattr(fn, "__module__", None) or ""
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return f"{module}.{qualname}" if module else qualname


# ---- per-axis helpers ------------------------------------------------------------------------


def _per_axis(value: Any, nd: int) -> tuple:
    if isinstance(value, (list, tuple, torch.Size)):
        items = tuple(value)
        return items * nd if len(items) == 1 and nd > 1 else items
    return (value,) * nd


def _ints(value: Any, nd: int) -> tuple[int, ...]:
    return tuple(int(v) for v in _per_axis(value, nd))


def _pairs(value: Any, nd: int) -> tuple[tuple[int, int], ...]:
    return tuple((int(p), int(p)) for p in _per_axis(value, nd))


def same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``padding='same'`` as PyTorch applies it: total ``d*(k-1)``, the odd pixel at the end."""
    out = []
    for k, d in zip(kernel, dilation):
        total = d * (k - 1)
        out.append((total // 2, total - total // 2))
    return tuple(out)


def _conv_padding(padding: Any, kernel: tuple[int, ...], dilation: tuple[int, ...]
                  ) -> tuple[tuple[tuple[int, int], ...], str]:
    nd = len(kernel)
    if isinstance(padding, str):
        if padding == "same":
            return same_padding(kernel, dilation), "same"
        return ((0, 0),) * nd, padding
    return _pairs(padding, nd), ""
