"""Shape propagation on meta tensors over an fx graph, recording per-node failures instead of stopping."""


from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from archlint.frontends.torch.locate import _one_line
from archlint.frontends.torch.opcall import FAILED
from archlint.frontends.torch.parity import check_cpu_only_rules, pytorch_message


def _is_unsupported(exc: BaseException) -> bool:
    """An archlint limitation (no meta kernel, data-dependent op), not a bug in the model."""
    text = str(exc).lower()
    return isinstance(exc, NotImplementedError) or "meta" in text or "data-dependent" in text


class _MetaState:
    """Meta stand-ins for a real-weight model's parameters and buffers (no data copied)."""

    def __init__(self, root: nn.Module):
        self.needed = any(
            t.device.type != "meta" for t in itertools.chain(root.parameters(), root.buffers())
        )
        self._cache: dict[int, torch.Tensor] = {}

    def tensor(self, value: Any) -> Any:
        if not self.needed or not isinstance(value, torch.Tensor) or value.device.type == "meta":
            return value
        key = id(value)
        if key not in self._cache:
            self._cache[key] = torch.empty_like(value, device="meta")
        return self._cache[key]

    def call(self, module: nn.Module, args: tuple, kwargs: dict) -> Any:
        if not self.needed:
            return module(*args, **kwargs)
        state = {
            k: self.tensor(v)
            for k, v in itertools.chain(module.named_parameters(), module.named_buffers())
        }
        return torch.func.functional_call(module, state, args, kwargs)


class _ShapeInterpreter(fx.Interpreter):
    """Runs an fx graph on meta tensors, recording per-node failures instead of stopping."""

    def __init__(self, gm: fx.GraphModule, meta: _MetaState):
        super().__init__(gm, garbage_collect_values=False)
        self.meta = meta
        self.errors: dict[str, str] = {}  # node -> reason (a real shape error)
        self.unsupported: dict[str, str] = {}  # node -> reason (archlint cannot model it)

    def run_node(self, n: fx.Node) -> Any:
        if any(self.env.get(a) is FAILED for a in n.all_input_nodes):
            return FAILED
        if n.op not in ("call_module", "call_function", "call_method"):
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        kind, target = _fx_kind_target(self.module, n)
        try:
            value = super().run_node(n)
            check_cpu_only_rules(kind, target, args, kwargs)
            return value
        except Exception as exc:
            if _is_unsupported(exc):
                self.unsupported[n.name] = _one_line(exc)
            else:
                self.errors[n.name] = pytorch_message(kind, target, args, kwargs, exc)
            return FAILED

    def get_attr(self, target: str, args: tuple, kwargs: dict) -> Any:
        return self.meta.tensor(super().get_attr(target, args, kwargs))

    def call_module(self, target: str, args: tuple, kwargs: dict) -> Any:
        return self.meta.call(self.fetch_attr(target), args, kwargs)


def _fx_kind_target(gm: fx.GraphModule, n: fx.Node) -> tuple[str, Any]:
    if n.op == "call_module":
        return "module", gm.get_submodule(n.target)
    return ("method" if n.op == "call_method" else "function"), n.target
