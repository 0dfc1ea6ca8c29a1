"""Helpers shared by the rules in this package: not a rule itself.

Small pure functions over the IR: the ops a layer's output flows into before anything changes its
size, the layers next to it, the sizes going in and out, one axis of a sliding window
(:class:`Window`), the input-size sweep and its "fires at / avoided at" note, and the names and
number formats used in messages. They read only ``op``, ``inputs``, ``attrs`` and ``shapes``, so
they work the same for both frontends. Rules import shared pieces from here, never from each
other, so that any one rule module can be removed without breaking the rest.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Iterator

import networkx as nx
import numpy as np

from archlint.graph import ELEMENTWISE_MERGES, MERGES, output_shape, spatial
from archlint.passes.windows import Window, windows_of  # noqa: F401  (the rules' window)

#: Ops a layer's output goes through without changing its spatial geometry or meaning.
SIZE_NEUTRAL = frozenset({"pointwise", "norm"})


def spatial_out(g: nx.DiGraph, name: str) -> tuple[int, ...] | None:
    return spatial(output_shape(g, name))


def spatial_in(g: nx.DiGraph, name: str) -> tuple[int, ...] | None:
    """Spatial size of a node's first input (its data operand)."""
    inputs = g.nodes[name]["inputs"]
    return spatial_out(g, inputs[0]) if inputs else None


def kernel_extent(kernel: int, dilation: int) -> int:
    return dilation * (kernel - 1) + 1


def downstream(g: nx.DiGraph, name: str) -> Iterator[tuple[str, str]]:
    """(consumer, feeder) pairs: the first non-size-neutral ops that ``name``'s output reaches,
    with the node that feeds each (``name`` itself or a size-neutral op after it)."""
    seen = {name}
    stack = [name]
    while stack:
        node = stack.pop()
        for succ in g.successors(node):
            if succ in seen:
                continue
            seen.add(succ)
            if g.nodes[succ]["op"] in SIZE_NEUTRAL and len(set(g.nodes[succ]["inputs"])) == 1:
                stack.append(succ)
            else:
                yield succ, node


def upstream(g: nx.DiGraph, name: str) -> str | None:
    """The first non-size-neutral op before ``name``'s data input."""
    inputs = g.nodes[name]["inputs"]
    node = inputs[0] if inputs else None
    while node is not None and g.nodes[node]["op"] in SIZE_NEUTRAL:
        node_inputs = g.nodes[node]["inputs"]
        node = node_inputs[0] if node_inputs else None
    return node


def merges_fed(g: nx.DiGraph, name: str) -> list[tuple[str, str]]:
    """(merge, feeder) for each merge ``name``'s output reaches through size-neutral ops."""
    return [(m, f) for m, f in downstream(g, name) if g.nodes[m]["op"] in MERGES]


def other_branches(g: nx.DiGraph, merge: str, feeder: str) -> list[str]:
    """The merge's other operands (producers), skipping the one ``feeder`` provides."""
    return [p for p in dict.fromkeys(g.nodes[merge]["inputs"]) if p != feeder]


def is_size_keeping_conv(g: nx.DiGraph, name: str) -> bool:
    """A stride-1 conv with a real window (extent > 1) whose output size equals its input's."""
    node = g.nodes[name]
    if node["op"] != "conv":
        return False
    attrs = node["attrs"]
    if any(s != 1 for s in attrs.stride):
        return False
    dilation = attrs.dilation or (1,) * len(attrs.kernel)
    extents = [kernel_extent(k, d) for k, d in zip(attrs.kernel, dilation)]
    if not extents or max(extents) <= 1:
        return False
    size_in, size_out = spatial_in(g, name), spatial_out(g, name)
    return size_in is not None and size_in == size_out


def neighbours_keep_size(g: nx.DiGraph, name: str) -> list[str]:
    """The windowed neighbours (just before or just after ``name``) that keep the map's size."""
    around = [upstream(g, name), *(c for c, _ in downstream(g, name))]
    return [n for n in dict.fromkeys(around) if n is not None and is_size_keeping_conv(g, n)]


def merge_partners_at_size(g: nx.DiGraph, name: str, size: tuple[int, ...]) -> list[str]:
    """Merges fed by ``name`` whose other branch has spatial ``size`` (broadcast operands of
    size 1 are not branches of the same geometry and do not count)."""
    found = []
    for merge, feeder in merges_fed(g, name):
        for other in other_branches(g, merge, feeder):
            other_size = spatial_out(g, other)
            if other_size == size and not (
                g.nodes[merge]["op"] in ELEMENTWISE_MERGES and all(s == 1 for s in size)
            ):
                found.append(merge)
                break
    return found


def layer_name(g: nx.DiGraph, name: str) -> str:
    """The module qualname / ONNX node name for messages."""
    return g.nodes[name]["location"].node or name


def layer_behind(g: nx.DiGraph, node: str) -> str:
    """The layer behind activations/norms (single-input ones), which is what a user recognises
    as the branch or the layer: ``relu_1`` -> ``enc2``."""
    seen = set()
    while g.nodes[node]["op"] in SIZE_NEUTRAL and node not in seen:
        seen.add(node)
        inputs = list(dict.fromkeys(g.nodes[node]["inputs"]))
        if len(inputs) != 1:
            break
        node = inputs[0]
    return node


def fmt_size(size: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(s) for s in size)


def fmt_axes(values: tuple[int, ...] | list[int]) -> str:
    """One number when every axis agrees (``3``), else a tuple (``(3, 5)``), as PyTorch takes it."""
    values = tuple(values)
    if len(set(values)) == 1:
        return str(values[0])
    return "(" + ", ".join(str(v) for v in values) + ")"


def decimal(value: Fraction) -> str:
    """``28`` for a whole number, else ``28.5`` (``%g``)."""
    return str(int(value)) if value.denominator == 1 else f"{float(value):g}"


def read_fraction(kernel: int, stride: int, dilation: int) -> Fraction:
    """Share of input rows a strided window reads in the steady state: the taps' offsets
    ``t * dilation`` cover that many of the ``stride`` residues."""
    residues = {(t * dilation) % stride for t in range(min(kernel, stride))}  # period <= stride
    return Fraction(len(residues), stride)


def windows(attrs) -> list[tuple[int, int, int, tuple[int, int]]]:
    """Per spatial axis (kernel, stride, dilation, (pad_begin, pad_end)); [] when the frontend
    gave no kernel. Missing stride/dilation/padding entries mean 1/1/(0, 0)."""
    axes = len(attrs.kernel)
    if axes == 0:
        return []
    stride = attrs.stride or (1,) * axes
    dilation = attrs.dilation or (1,) * axes
    padding = attrs.padding or ((0, 0),) * axes
    return list(zip(attrs.kernel, stride, dilation, padding))


def size_sweep(g: nx.DiGraph):
    """The input-size sweep the sizes pass wrote (``g.graph["sizes"]``), or None when there is
    none (or it is not a sweep with per-node sizes)."""
    sweep = g.graph.get("sizes")
    return sweep if sweep is not None and hasattr(sweep, "spatial") else None


#: How the square sweep is named, by the number of spatial axes (as the sizes pass names it).
SWEEP_LETTERS = {1: "L", 2: "H = W", 3: "D = H = W"}


def sizes_note(sweep, fires, defined=None) -> str | None:
    """'fires at H = W in ...; avoided at H = W in ...' from the input-size sweep.

    ``fires`` and ``defined`` are masks over the swept sides: where the finding fires, and where
    the sizes it is about exist at all (its layers' inputs are defined). "Avoided" is where they
    exist and it does not fire: a fact about this finding, not the model's admissible sizes
    (another layer may still fail there; the sizes summary and input-size-constraints say so).
    """
    if sweep is None or fires is None:
        return None
    fires = np.asarray(fires, dtype=bool)
    scope = np.ones_like(fires) if defined is None else np.asarray(defined, dtype=bool)
    fires = fires & scope
    if not fires.any():
        return None
    letters = SWEEP_LETTERS.get(getattr(sweep, "axes", 2), "n")
    avoid = scope & ~fires
    avoided = f"avoided at {letters} in {sweep.describe(avoid)}" if avoid.any() else "no input size avoids it"
    return f"fires at {letters} in {sweep.describe(fires)}; {avoided}"


def example_size(g: nx.DiGraph) -> tuple[int, ...] | None:
    """Spatial size of the (first) model input at the example."""
    shapes = g.graph.get("input_shapes") or []
    return spatial(tuple(shapes[0])) if shapes else None


def producer_name(g: nx.DiGraph, name: str) -> str:
    """A readable name for the tensor ``name`` outputs: the layer that made it, looking past
    activations and norms applied in ``forward`` (``relu_1`` -> ``enc2``)."""
    node = name
    while g.nodes[node]["op"] in SIZE_NEUTRAL and g.nodes[node]["inputs"]:
        before = g.nodes[node]["inputs"][0]
        if g.nodes[before]["op"] == "input":
            break
        node = before
    data = g.nodes[node]
    origin = data["origin"] or ""
    if origin.startswith(("operator.", "torch.", "F.", "Tensor.")) and data["location"].line:
        return f"{origin} (line {data['location'].line})"  # a call in forward: no layer name
    return layer_name(g, node)


def merge_name(g: nx.DiGraph, merge: str) -> str:
    """``torch.cat (line 25)`` for a merge written in forward."""
    node = g.nodes[merge]
    where = f" (line {node['location'].line})" if node["location"].line else ""
    return f"{node['origin'] or node['op']}{where}"


def where(g: nx.DiGraph, node: str) -> str:
    """'line 25' (the model file is the finding's file), or file:line for another file."""
    location = g.nodes[node]["location"]
    if location.line is None:
        return "ONNX node" if g.graph.get("frontend") == "onnx" else (location.node or node)
    if location.file is not None and location.file != g.graph.get("target"):
        return f"{location.file}:{location.line}"
    return f"line {location.line}"


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
