"""Eager capture (fx could not trace): run forward on meta tensors and record each op."""


from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Any

import torch
import torch.fx as fx
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from archlint.frontends.torch.locate import (
    _assignment_site,
    _innermost_user_frame,
    _one_line,
    _user_frame_of,
)
from archlint.frontends.torch.op_attrs import describe
from archlint.frontends.torch.opcall import (
    OpCall,
    _function_origin,
    _has_tensor,
    _shapes_of,
)
from archlint.frontends.torch.parity import check_cpu_only_rules, pytorch_message
from archlint.frontends.torch.shape_prop import _is_unsupported, _MetaState
from archlint.graph import Location, add_op

if TYPE_CHECKING:
    from archlint.frontends.torch.builder import _GraphBuilder


#: functions whose output size is chosen at run time (so a constant they make may follow the input)
_RESIZING = frozenset({"interpolate", "upsample", "grid_sample", "adaptive_avg_pool1d",
                       "adaptive_avg_pool2d", "adaptive_avg_pool3d", "arange", "linspace",
                       "meshgrid", "zeros", "ones", "full", "empty", "rand", "randn"})


class _StopCapture(BaseException):
    """Raised through the user's forward once an op failed; the note says where.

    A BaseException, so that a user's ``except Exception`` does not swallow it."""


class _EagerRecorder(TorchFunctionMode):
    """Records each torch call made by forward (outside leaf modules) and each leaf module call,
    connecting them by tensor identity."""

    def __init__(self, builder: _GraphBuilder, inputs: list[torch.Tensor],
                 args: tuple | None = None, kwargs: dict | None = None):
        super().__init__()
        self.builder = builder
        self.g = builder.g
        self.inputs = inputs
        self.call_args = tuple(inputs) if args is None else args
        self.call_kwargs = kwargs or {}
        self.producer: dict[int, str] = {}
        self.keep: list[Any] = []  # keeps recorded tensors alive so their ids stay unique
        self.leaf_depth = 0
        self.names: dict[str, int] = {}
        self.qualnames = {m: name for name, m in builder.root.named_modules()}
        #: id of a tensor computed from parameters only -> (parameter name, follows the input)
        self._derived: dict[int, tuple[str, bool]] = {}

    def _parameters(self) -> dict[int, str]:
        if not hasattr(self, "_named_constants"):
            root = self.builder.root
            named = list(root.named_parameters()) + list(root.named_buffers())
            self._named_constants = {id(t): f"self.{n}" for n, t in named}
        return self._named_constants

    def _constant_name(self, raw: Any) -> str:
        if id(raw) in self._derived:
            return self._derived[id(raw)][0]
        return self._parameters().get(id(raw), "a constant")

    def _not_a_parameter(self, raw: Any) -> bool:
        """Eagerly, a constant operand counts as fixed when it is a parameter/buffer or was
        computed from them without a resize or a range; anything else may follow the input."""
        if id(raw) in self._parameters():
            return False
        return self._derived.get(id(raw), ("", True))[1]

    def run(self) -> None:
        root = self.builder.root
        tracer = fx.Tracer()
        leaves = [m for name, m in root.named_modules()
                  if m is not root and tracer.is_leaf_module(m, name)]
        wrapped = [(m, self._wrap_leaf(m)) for m in leaves]
        for i, t in enumerate(self.inputs):
            name = self._unique(f"x{i}" if len(self.inputs) > 1 else "x")
            loc = Location(self.builder._forward_loc[0], self.builder._forward_loc[1], name)
            add_op(self.g, name, "input", shapes=(tuple(t.shape),), location=loc, origin="input")
            self._remember(t, name)
        meta = _MetaState(root)
        out: Any = None
        try:
            with torch.no_grad(), torch.device("meta"), self:
                out = meta.call(root, self.call_args, self.call_kwargs)
        except _StopCapture:
            out = None
        except Exception as exc:
            where = _user_frame_of(exc, self.builder.files)
            self.g.graph["capture_note"] = (
                f"capture stopped at {where or 'forward'}: {type(exc).__name__}: {_one_line(exc)}"
            )
            out = None
        finally:
            for m, original in wrapped:
                if original is None:
                    del m.forward
                else:
                    m.forward = original
        names = [self.producer[id(v)] for v in pytree.tree_leaves(out)
                 if isinstance(v, torch.Tensor) and id(v) in self.producer]
        self.builder._add_output_names(names)

    def _wrap_leaf(self, module: nn.Module) -> Any:
        own = module.__dict__.get("forward")
        original_forward = module.forward
        recorder = self

        def forward(*args: Any, **kwargs: Any) -> Any:
            if recorder.leaf_depth:
                return original_forward(*args, **kwargs)
            recorder.leaf_depth += 1
            try:
                out = original_forward(*args, **kwargs)
                check_cpu_only_rules("module", module, args, kwargs)
            except Exception as exc:
                recorder._record("module", module, args, kwargs, None, exc)
                raise _StopCapture() from exc
            finally:
                recorder.leaf_depth -= 1
            recorder._record("module", module, args, kwargs, out, None)
            return out

        module.forward = forward
        return own

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if self.leaf_depth:
            return func(*args, **kwargs)
        try:
            out = func(*args, **kwargs)
            if self._activation_args(args, kwargs):
                check_cpu_only_rules(*_eager_target(func), args, kwargs)
        except Exception as exc:
            if not self._activation_args(args, kwargs):
                raise
            if _is_unsupported(exc):  # e.g. ``if x.sum() > 0``: a branch on tensor values
                where = _innermost_user_frame(sys._getframe(1))
                at = f"{self.builder.files.display(where[0])}:{where[1]}" if where else "forward"
                kind, target = _eager_target(func)
                what = f"Tensor.{target}" if kind == "method" else _function_origin(target)
                self.g.graph["capture_note"] = (
                    f"capture stopped at {at}: forward needs tensor values there ({what}: "
                    f"{_one_line(exc)}); the ops before it were captured"
                )
            else:
                self._record(*_eager_target(func), args, kwargs, None, exc)
            raise _StopCapture() from exc
        if self._activation_args(args, kwargs) and _has_tensor(out):
            self._record(*_eager_target(func), args, kwargs, out, None)
        elif _has_tensor(out):
            self._remember_constant(func, args, kwargs, out)
        return out

    def _remember_constant(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """A tensor computed from parameters/buffers only (``bias_table[index]``): remember
        where it came from, and whether a resize or a range built from sizes shaped it (then it
        may follow the input size: eagerly, sizes are plain numbers)."""
        named = self._parameters()
        sources = [v for v in pytree.tree_leaves((args, kwargs)) if isinstance(v, torch.Tensor)]
        known = [id(v) in named or id(v) in self._derived for v in sources]
        name_of = next((named.get(id(v)) or self._derived[id(v)][0] for v, k in zip(sources, known)
                        if k), None)
        adapts = any(self._derived.get(id(v), ("", False))[1] for v in sources)
        target = getattr(func, "__name__", "")
        if target in _RESIZING or not sources:
            adapts = True  # a factory (arange, linspace) or a resize: sized at run time
        if name_of is None and sources:
            return
        for v in pytree.tree_leaves(out):
            if isinstance(v, torch.Tensor):
                self._derived[id(v)] = (name_of or "a constant", adapts)
                self.keep.append(v)

    def _activation_args(self, args: tuple, kwargs: dict) -> list[str]:
        return [self.producer[id(v)] for v in pytree.tree_leaves((args, kwargs))
                if isinstance(v, torch.Tensor) and id(v) in self.producer]

    def _record(self, kind: str, target: Any, args: tuple, kwargs: dict, out: Any,
                exc: BaseException | None) -> None:
        inputs = self._activation_args(args, kwargs)
        call = OpCall(kind=kind, target=target, args=args, kwargs=kwargs, raw_args=args,
                      raw_kwargs=kwargs, producer=self._producer_of,
                      constant_name=self._constant_name,
                      sized_from_activation=self._not_a_parameter,
                      module=target if kind == "module" else None)
        op, attrs, origin = describe(call)
        base = self.qualnames.get(target, "module") if kind == "module" else \
            re.sub(r"\W", "_", origin.rsplit(".", 1)[-1]).strip("_") or "op"
        name = self._unique(base.replace(".", "_"))
        location = self._location(kind, target, name)
        error = None
        if exc is not None:
            error = None if _is_unsupported(exc) else pytorch_message(
                kind, target, args, kwargs, exc)
            self.g.graph["capture_note"] = (
                f"capture stopped at {location}: {origin}: {error or _one_line(exc)}"
            )
        add_op(self.g, name, op, inputs=inputs, attrs=attrs,
               shapes=None if out is None else _shapes_of(out), location=location,
               origin=origin, error=error)
        for v in pytree.tree_leaves(out):
            if isinstance(v, torch.Tensor):
                self._remember(v, name)

    def _producer_of(self, value: Any) -> str | None:
        return self.producer.get(id(value)) if isinstance(value, torch.Tensor) else None

    def _remember(self, tensor: torch.Tensor, name: str) -> None:
        self.producer[id(tensor)] = name
        self.keep.append(tensor)

    def _unique(self, base: str) -> str:
        count = self.names.get(base, 0)
        self.names[base] = count + 1
        name = base if count == 0 else f"{base}_{count}"
        while name in self.g:
            count += 1
            name = f"{base}_{count}"
        return name

    def _location(self, kind: str, target: Any, name: str) -> Location:
        """A layer's construction line, else the forward line that made the call."""
        node = self.qualnames.get(target, name) if kind == "module" else name
        if kind == "module":
            site = self.builder.sites.get(target) or _assignment_site(
                self.builder.root, node, self.builder.files)
            if site is not None:
                return Location(site[0], site[1], node)
        frame = _innermost_user_frame(sys._getframe(1))
        if frame is None:
            return Location(None, None, node)
        return Location(self.builder.files.display(frame[0]), frame[1], node)


def _eager_target(func: Any) -> tuple[str, Any]:
    """A torch-function callable as fx would name it: a method name or a function."""
    qualname = getattr(func, "__qualname__", "") or ""
    name = getattr(func, "__name__", "")
    if qualname.startswith(("TensorBase.", "Tensor.")) and name:
        return "method", name
    return "function", func
