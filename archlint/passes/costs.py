"""Parameters and multiply-accumulates per op, and the module each op belongs to.

``cost_pass(g)`` writes, for every node:

``g.nodes[n]["cost"]``
    a :class:`LayerCost`: parameters (all, and the trainable ones) and MACs, or ``None`` where
    a count is unknown (never a guess);
``g.nodes[n]["scope"]``
    the module path the op runs in (``layer1.0`` for the ``+`` of a ResNet block, the module's
    own qualname for a layer), ``""`` at the top level;

and ``g.graph["cost_totals"]`` (a :class:`CostTotals`). It is not part of ``run_passes``: only
the model summary (``--show layers``), the HTML and JSON reports need it, so a plain lint of a
30k-node graph pays nothing.

Counting follows torchinfo's summary, which users compare with:

* parameters: on the torch path, the parameters of the module an op calls, read from the traced
  module (meta tensors: shapes and ``requires_grad`` only); a module called twice counts once,
  at its first call. Without a module (ONNX, a functional call, a report from a worker process)
  they are counted from the op's attributes: conv ``C_out * C_in / groups * prod(k)`` (+
  ``C_out`` with a bias), linear ``in * out`` (+ ``out``), norm ``2 * C`` when affine. Parameters
  of the model that no traced op uses are kept in the totals as ``unattributed``.
* MACs (torchinfo's "mult-adds", as ptflops counts convs): a conv or transposed conv applies
  each weight and bias once per output position, ``params * N * prod(spatial out)``; a linear
  layer once per output row, ``params * prod(out[:-1])``; a norm layer once per sample,
  ``params * N``. Ops without parameters (pooling, activations, merges) count 0, as in torchinfo.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import networkx as nx

from archlint.graph import ops

__all__ = ["LayerCost", "CostTotals", "cost_pass", "node_scope"]

#: Ops whose parameters are applied once per output position (torchinfo: "Conv" modules).
_PER_POSITION = ("conv", "conv_transpose")


@dataclass(frozen=True)
class LayerCost:
    params: int | None
    trainable: int | None
    macs: int | None

    @property
    def frozen(self) -> int | None:
        if self.params is None or self.trainable is None:
            return None
        return self.params - self.trainable


@dataclass(frozen=True)
class CostTotals:
    params: int | None
    trainable: int | None
    macs: int | None
    #: parameters of the model that no traced op reads (counted in ``params``).
    unattributed: int = 0

    @property
    def frozen(self) -> int | None:
        if self.params is None or self.trainable is None:
            return None
        return self.params - self.trainable


def cost_pass(g: nx.DiGraph) -> CostTotals:
    """Write ``cost`` and ``scope`` on every node and return (and store) the totals."""
    cached = g.graph.get("cost_totals")
    if cached is not None:
        return cached
    root = g.graph.get("traced_module")
    if not hasattr(root, "parameters"):
        root = None
    stacks = _module_stacks(g)
    weights = _onnx_weights(g) if g.graph.get("frontend") == "onnx" else None
    seen: set[Any] = set()
    costs = []
    for name in ops(g):
        data = g.nodes[name]
        data["scope"] = node_scope(g, name, stacks)
        if weights is not None and data["op"] in _WEIGHTED:
            data["cost"] = _initializer_cost(data, weights, seen)
        else:
            data["cost"] = _node_cost(g, name, root, seen)
        costs.append(data["cost"])
    macs = _sum(c.macs for c in costs)
    if root is None:
        totals = CostTotals(_sum(c.params for c in costs), _sum(c.trainable for c in costs), macs)
    else:
        # The module is the truth for totals; functional ops' weights are among its parameters.
        unique = {id(p): p for p in root.parameters()}
        params = sum(p.numel() for p in unique.values())
        trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
        attributed = _sum(c.params for c in costs) or 0
        totals = CostTotals(params, trainable, macs, unattributed=max(params - attributed, 0))
    g.graph["cost_totals"] = totals
    return totals


def _sum(values: Any) -> int | None:
    total = 0
    for v in values:
        if v is None:
            return None
        total += v
    return total


# --- one node --------------------------------------------------------------------------------


def _node_cost(g: nx.DiGraph, name: str, root: Any, seen: set[int]) -> LayerCost:
    data = g.nodes[name]
    module = _called_module(data, root)
    if module is not None:
        fresh = [p for p in module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        n_params = sum(p.numel() for p in fresh)
        n_trainable = sum(p.numel() for p in fresh if p.requires_grad)
        # MACs count every call (torchinfo hooks each call); parameters count once.
        macs = _macs(data, sum(p.numel() for p in module.parameters()))
        return LayerCost(n_params, n_trainable, macs)
    counted = _params_from_attrs(data)
    if counted is None:
        return LayerCost(None, None, None)
    # Only a module knows requires_grad (ONNX has no frozen weights to speak of): a weight-free
    # op is trivially all-trainable, any other count has an unknown split.
    return LayerCost(counted, 0 if counted == 0 else None, _macs(data, counted))


def _called_module(data: dict, root: Any) -> Any:
    """The submodule a ``call_module`` op ran (its qualname is the location's node)."""
    if root is None or not str(data.get("origin", "")).startswith("nn."):
        return None
    location = data.get("location")
    qualname = getattr(location, "node", None)
    if not qualname or not hasattr(root, "get_submodule"):
        return None
    try:
        return root.get_submodule(qualname)
    except (AttributeError, TypeError):
        return None


def _params_from_attrs(data: dict) -> int | None:
    op = data["op"]
    attrs = data["attrs"]
    if op in _PER_POSITION:
        if attrs.in_channels is None or attrs.out_channels is None or not attrs.kernel:
            return None
        groups = attrs.groups or 1
        weights = attrs.out_channels * (attrs.in_channels // groups) * prod(attrs.kernel)
        return weights + (attrs.out_channels if attrs.bias else 0)
    if op == "linear":
        if attrs.in_features is None or attrs.out_features is None:
            return None if attrs.extra.get("weight_is_activation") is not True else 0
        return attrs.in_features * attrs.out_features + (attrs.out_features if attrs.bias else 0)
    if op == "norm":
        affine = attrs.extra.get("affine", True)
        features = attrs.extra.get("num_features") or attrs.extra.get("num_channels")
        if not affine:
            return 0
        if features is None:
            return None
        return 2 * int(features)
    return 0  # no other op kind holds weights


def _macs(data: dict, n_params: int | None) -> int | None:
    if not n_params:
        return 0 if n_params == 0 else None
    shapes = data.get("shapes")
    if not shapes or not shapes[0]:
        return None
    out = shapes[0]
    op = data["op"]
    if op in _PER_POSITION:
        return n_params * out[0] * prod(out[2:])
    if op == "linear":
        return n_params * prod(out[:-1])
    return n_params * out[0]


# --- ONNX initializers ----------------------------------------------------------------------

#: IR kinds whose ONNX node reads weights (inputs 1 and 2: W and B, Gemm's B and C, a norm's
#: scale and bias; a norm's running mean and variance are buffers, as in torch).
_WEIGHTED = ("conv", "conv_transpose", "linear", "norm")


def _onnx_weights(g: nx.DiGraph) -> dict[str, list[tuple[str, int]]] | None:
    """ONNX node name -> (initializer, element count) of its weight inputs, read from the file
    (no external data: only the shapes are needed). None when there is no file to read."""
    target = g.graph.get("target")
    if not target or not str(target).lower().endswith(".onnx"):
        return None
    try:
        import onnx

        model = onnx.load(str(target), load_external_data=False)
    except Exception:  # the file moved or is unreadable: fall back to the attributes
        return None
    sizes = {t.name: prod(t.dims) for t in model.graph.initializer}
    out: dict[str, list[tuple[str, int]]] = {}
    for index, node in enumerate(model.graph.node):
        name = node.name or f"{node.op_type}_{index}"
        out[name] = [(t, sizes[t]) for t in list(node.input)[1:3] if t in sizes]
    return out


def _initializer_cost(data: dict, weights: dict[str, list[tuple[str, int]]], seen: set[Any]) -> LayerCost:
    qualname = getattr(data.get("location"), "node", None)
    if qualname not in weights:
        counted = _params_from_attrs(data)
        return LayerCost(counted, None if counted else counted, _macs(data, counted))
    used = weights[qualname]
    fresh = [(t, n) for t, n in used if ("onnx", t) not in seen]
    seen.update(("onnx", t) for t, _ in fresh)
    # A shared initializer counts once as a parameter, and at every node for MACs.
    return LayerCost(sum(n for _, n in fresh), None, _macs(data, sum(n for _, n in used)))


# --- module scopes ---------------------------------------------------------------------------


def _module_stacks(g: nx.DiGraph) -> dict[str, tuple[str, ...]]:
    """IR node -> the module qualnames it ran inside (outermost first), from fx's
    ``nn_module_stack``; empty when the graph was not traced by fx."""
    gm = g.graph.get("graph_module")
    fx_names = g.graph.get("fx_names") or {}
    if gm is None or not fx_names:
        return {}
    out: dict[str, tuple[str, ...]] = {}
    for node in gm.graph.nodes:
        ir_name = fx_names.get(node.name)
        stack = node.meta.get("nn_module_stack") if hasattr(node, "meta") else None
        if isinstance(ir_name, str) and stack:
            out[ir_name] = tuple(str(k) for k in stack.keys())
    return out


def node_scope(g: nx.DiGraph, name: str, stacks: dict[str, tuple[str, ...]] | None = None) -> str:
    """The module path an op belongs to, for folding (``--depth``) and grouping (HTML)."""
    data = g.nodes[name]
    if data.get("scope") is not None:
        return data["scope"]
    recorded = data.get("module_path")  # a frontend may record it directly
    if isinstance(recorded, str):
        return recorded
    stack = (stacks or {}).get(name)
    if stack:
        return stack[-1]
    qualname = getattr(data.get("location"), "node", None) or name
    if g.graph.get("frontend") == "onnx":
        # Exporters name nodes by path: /layer1/layer1.0/conv1/Conv -> layer1.layer1.0.conv1
        parts = [p for p in qualname.split("/") if p]
        if qualname.startswith("/") and len(parts) > 1:
            return ".".join(parts[:-1])
        return ""
    if str(data.get("origin", "")).startswith("nn."):
        return qualname
    return ""
