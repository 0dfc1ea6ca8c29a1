"""Building the IR: fx nodes -> archlint graph nodes with shapes, attrs and locations."""


from __future__ import annotations

import itertools
import operator
from typing import Any

import torch
import torch.fx as fx
import torch.nn as nn

from archlint.frontends.torch.eager import _EagerRecorder
from archlint.frontends.torch.locate import (
    ConstructionSites,
    _assignment_site,
    _FileNames,
    _forward_location,
)
from archlint.frontends.torch.op_attrs import describe
from archlint.frontends.torch.opcall import FAILED, _fx_call, _has_tensor, _shapes_of
from archlint.frontends.torch.shape_prop import _MetaState, _ShapeInterpreter
from archlint.graph import Location, add_op


class _GraphBuilder:
    def __init__(self, g: Any, root: nn.Module, files: _FileNames, sites: ConstructionSites):
        self.g = g
        self.root = root
        self.files = files
        self.sites = sites
        self._forward_loc = _forward_location(root, files)

    # ---- fx path ---------------------------------------------------------------------------

    def from_fx(self, gm: fx.GraphModule, inputs: list[torch.Tensor]) -> None:
        interp = _ShapeInterpreter(gm, _MetaState(self.root))
        with torch.no_grad(), torch.device("meta"):
            interp.run(*inputs)
        env = interp.env
        ir_of: dict[fx.Node, str] = {}
        fx_names: dict[str, str] = self.g.graph["fx_names"]
        sources: dict[fx.Node, set[str]] = {}  # non-tensor values: the IR tensors they came from
        first_unsupported: str | None = None
        for n in gm.graph.nodes:
            value = env.get(n, FAILED)
            if n.op == "placeholder":
                if _has_tensor(value):  # a tensor, or the tensors of ``*inputs``
                    loc = Location(self._forward_loc[0], self._forward_loc[1], n.name)
                    add_op(self.g, n.name, "input", shapes=_shapes_of(value), location=loc,
                           origin="input")
                    ir_of[n] = n.name
                    fx_names[n.name] = n.name
                continue
            if n.op == "get_attr":
                continue
            if n.op == "output":
                fx_names[n.name] = self._add_output_names(
                    [ir_of[a] for a in _fx_tensor_inputs(n, ir_of)])
                continue
            tensor_inputs = _fx_tensor_inputs(n, ir_of)
            failed = value is FAILED
            if not tensor_inputs:
                sources[n] = set().union(*(sources.get(a, set()) for a in n.all_input_nodes))
                continue  # constants, parameters and factory tensors are not activations
            if (failed and not _returns_tensor(n)) or (not failed and not _has_tensor(value)):
                # shape arithmetic (x.size(2), skip.shape[2:]): resolves attrs, not an op
                sources[n] = {ir_of[a] for a in tensor_inputs} | set().union(
                    *(sources.get(a, set()) for a in n.all_input_nodes)
                )
                continue
            alias = self._alias(n, value, ir_of)
            if alias is not None:
                ir_of[n] = alias
                fx_names[n.name] = alias
                continue
            call = _fx_call(n, gm, env, ir_of, sources, self.g)
            op, attrs, origin = describe(call)
            error = interp.errors.get(n.name)
            if n.name in interp.unsupported and first_unsupported is None:
                first_unsupported = n.name
            shapes = None if failed else _shapes_of(value)
            add_op(
                self.g,
                n.name,
                op,
                inputs=[ir_of[a] for a in tensor_inputs],
                attrs=attrs,
                shapes=shapes,
                location=self._fx_location(n, gm),
                origin=origin,
                error=error,
            )
            ir_of[n] = n.name
            fx_names[n.name] = n.name
        if first_unsupported is not None:
            loc = self.g.nodes[first_unsupported]["location"]
            reason = interp.unsupported[first_unsupported]
            self.g.graph["capture_note"] = (
                f"shapes unknown from {first_unsupported} ({loc}) on: archlint cannot run "
                f"{self.g.nodes[first_unsupported]['origin']} on meta tensors ({reason})"
            )

    def _alias(self, n: fx.Node, value: Any, ir_of: dict[fx.Node, str]) -> str | None:
        """``out, state = self.lstm(x)``: element 0 of a module's tuple output is that module."""
        if n.op != "call_function" or n.target is not operator.getitem:
            return None
        src = n.args[0]
        if not isinstance(src, fx.Node) or src not in ir_of or n.args[1] != 0:
            return None
        shapes = self.g.nodes[ir_of[src]]["shapes"]
        if not isinstance(value, torch.Tensor) or shapes is None or len(shapes) < 2:
            return None
        return ir_of[src] if shapes[0] == tuple(value.shape) else None

    def _fx_location(self, n: fx.Node, gm: fx.GraphModule) -> Location:
        if n.op == "call_module":
            module = gm.get_submodule(n.target)
            site = self.sites.get(module) or _assignment_site(self.root, n.target, self.files)
            if site is not None:
                return Location(site[0], site[1], n.target)
            file, line = self._call_location(n)
            return Location(file, line, n.target)
        file, line = self._call_location(n)
        return Location(file, line, n.name)

    def _call_location(self, n: fx.Node) -> tuple[str | None, int | None]:
        """The line in forward that made the call: the innermost user frame."""
        frame = n.meta.get("user_frame")
        if frame is None:
            return self._forward_loc
        return self.files.display(frame[0]), frame[1]

    def _add_output_names(self, names: list[str]) -> str:
        shapes: list[tuple[int, ...]] | None = []
        for name in names:
            s = self.g.nodes[name]["shapes"]
            if s is None:
                shapes = None
                break
            shapes.append(s[0])
        loc = Location(self._forward_loc[0], self._forward_loc[1], "output")
        candidates = itertools.chain(["output"], (f"output_{i}" for i in itertools.count(1)))
        out = next(n for n in candidates if n not in self.g)
        return add_op(self.g, out, "output", inputs=names,
                      shapes=None if shapes is None else tuple(shapes), location=loc,
                      origin="output")

    # ---- eager path (fx could not trace) ----------------------------------------------------

    def from_eager(self, inputs: list[torch.Tensor], args: tuple | None = None,
                   kwargs: dict | None = None) -> None:
        """``inputs``: the tensors; ``args``/``kwargs``: forward's arguments holding them
        (default: the tensors, positionally)."""
        recorder = _EagerRecorder(self, inputs, args, kwargs)
        recorder.run()


def _fx_tensor_inputs(n: fx.Node, ir_of: dict[fx.Node, str]) -> list[fx.Node]:
    """Argument nodes that carry activations, in argument order (repeats kept: ``x + x``)."""
    found: list[fx.Node] = []

    def visit(a: fx.Node) -> fx.Node:
        if a in ir_of:
            found.append(a)
        return a

    fx.node.map_arg((n.args, n.kwargs), visit)
    return found


_NON_TENSOR_METHODS = frozenset(
    {"size", "dim", "numel", "nelement", "ndimension", "item", "tolist", "get_device",
     "element_size", "is_contiguous", "stride", "data_ptr", "storage_offset"}
)


def _returns_tensor(n: fx.Node) -> bool:
    """For a failed node, whose value is unknown: does it produce a tensor?"""
    if n.op == "call_method":
        return n.target not in _NON_TENSOR_METHODS
    if n.op == "call_function":
        if n.target is getattr:
            return False
        if n.target is operator.getitem:
            src = n.args[0]
            return isinstance(src, fx.Node) and _returns_tensor(src)
    return True
