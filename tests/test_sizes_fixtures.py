"""The input-size sweep against the exact engines on the real fixture files.

1. At the example size every node's size formula equals the shape the frontend traced (meta /
   fake tensors), on every fixture, zoo model, regression and the example segmenter, and no node
   got past that check by being marked unknown for a disagreement.
2. For the small fixture models, the square admissible mask over 1..128 equals what PyTorch
   really does: the forward runs and no merge broadcasts a size-dependent 1-pixel branch over a
   wider one (a branch that is 1 pixel at every size, from global/adaptive pooling, may).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from archlint.graph import ELEMENTWISE_MERGES  # noqa: E402
from archlint.passes.sizes import input_size_pass  # noqa: E402
from realrun import linted, model_from_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_MODELS = sorted((ROOT / "fixtures" / "models").glob("*.py"))
REGRESSIONS = sorted((ROOT / "fixtures" / "regressions").glob("*.py"))
ALL_FILES = (
    FIXTURE_MODELS
    + sorted((ROOT / "fixtures" / "zoo").glob("*.py"))
    + [ROOT / "examples" / "segmenter.py"]
    + REGRESSIONS
)

_OUTSIDE_OPERAND = (
    "an operand of this concatenation is not in the graph (a parameter, a buffer or a tensor "
    "made from sizes): {} of {} on its axis come from the graph, so its size is no formula of "
    "the input"
)

#: Nodes the sweep may leave unknown, by (file stem, model, node), with the exact reason: ops the
#: IR cannot model and sizes that are no formula of the input; never a formula that disagrees
#: with the traced shape.
ALLOWED_UNKNOWN = {
    # x.mean((2, 3)) is captured as an op-"unknown" Tensor.mean; the head before it fails at
    # the example (32x32 collapses to 1x1 before a 3x3 conv), so no traced shape exists there.
    ("spatial_collapse_bad", "TinyInputClassifier", "mean"): "Tensor.mean has no size formula",
    # forward raises at the example: nothing reaches the output
    ("input_size_check_bad", "Checked", "output"): "output node without inputs",
    # Token layouts the formulas cannot decide: they say undecided there (the symbolic engine
    # decides these models). A class token or a coordinate map concatenated from outside the
    # graph (a parameter, or a tensor built from x.shape) has no size formula of the input:
    ("fixed_position_embedding_bad", "TinyViT", "cat"): _OUTSIDE_OPERAND.format(64, 65),
    ("fixed_position_embedding_bad", "CoordConv", "cat"): _OUTSIDE_OPERAND.format(8, 10),
    ("fixed_position_embedding_good", "CoordsFromSize", "cat"): _OUTSIDE_OPERAND.format(8, 10),
    ("batch_locked_bad", "ConstantBatch", "cat"): _OUTSIDE_OPERAND.format(64, 65),
    ("batch_locked_good", "ExpandBatch", "cat"): _OUTSIDE_OPERAND.format(64, 65),
    # attention has no per-op formula; a view whose entries are computed from sizes at run time
    ("fixed_position_embedding_good", "InterpolatedViT", "attn"): "nn.MultiheadAttention has no size formula",
    ("fixed_position_embedding_good", "WindowBias", "view"): "reshape with a run-time entry that is not an input dim",
}

#: Files whose model cannot be built at all (no graph, nothing to check), with the reason.
NO_GRAPH = {
    "same_padding_stride_bad": "padding='same' with stride > 1 raises in nn.Conv2d's constructor",
}

BRUTE_SIZES = range(1, 129)
MAX_PARAMS = 1_000_000


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))





# -- 1. formulas == traced shapes at the example ------------------------------------------------


def _example_sweep(g):
    """(sweep, sweep name, index) at which the sweep holds exactly the example input."""
    sweep = g.graph["sizes"]
    example = sweep.example
    assert example is not None and len(example) == sweep.axes, (example, sweep.axes)
    if not all(sweep.lo <= v <= sweep.hi for v in example):
        sweep = input_size_pass(g, (1, max(example)))  # widen the range to reach the example
    # the first per-axis sweep at n = example[0] holds the other axes at their example size
    name = "square" if sweep.axes == 1 else sweep.axis_names[0]
    return sweep, name, example[0] - sweep.lo


def _downstream_of(g, sources) -> set[str]:
    import networkx as nx

    out = set(sources)
    for s in sources:
        out |= nx.descendants(g, s)
    return out


def _assert_traced_broadcast(g, node, where):
    """A node the sweep rejects at the example while the exact engine traced it: it must be an
    elementwise merge whose traced operand broadcasts a spatial 1 over a wider dim."""
    data = g.nodes[node]
    shapes = data.get("shapes")
    if not shapes or shapes[0] is None or data.get("error") is not None:
        return  # the exact engine fails there too
    assert data["op"] in ELEMENTWISE_MERGES, (
        f"{where}: sweep rejects {node} ({data['op']}) at the example, the engine traced {shapes[0]}"
    )
    out = shapes[0]
    operands = [g.nodes[p]["shapes"][0] for p in data["inputs"] if g.nodes[p].get("shapes")]
    stretched = any(
        len(s) >= 3 and any(s[i - len(out) + len(s)] == 1 < out[i] for i in range(max(2, len(out) - len(s)), len(out)))
        for s in operands if s is not None
    )
    assert stretched, f"{where}: sweep rejects merge {node} at the example, no traced operand broadcasts"


@pytest.mark.parametrize("path", ALL_FILES, ids=_rel)
def test_formulas_equal_traced_shapes_at_the_example(path):
    reports = linted(path)
    assert reports, f"{_rel(path)}: no model"
    checked = 0
    for report in reports:
        g = report.graph
        if g is None:
            assert path.stem in NO_GRAPH, f"{_rel(path)}:{report.model}: {report.error}"
            continue
        assert g.graph.get("sizes") is not None, (
            f"{_rel(path)}:{report.model}: no sweep ({g.graph.get('passes_error') or g.graph.get('sizes_summary')})"
        )
        sweep, name, pos = _example_sweep(g)
        where = f"{_rel(path)}:{report.model}"

        unknown = {node: reason for node, reason in sweep.unknown}
        for node, reason in unknown.items():
            op = g.nodes[node]["op"]
            allowed = ALLOWED_UNKNOWN.get((path.stem, report.model, node))
            # an op without a formula, or one of the listed nodes the formulas cannot decide
            assert allowed is not None and reason == allowed, (
                f"{where}: node {node} (op {op}) left unknown: {reason}"
            )
        past_unknown = _downstream_of(g, unknown)

        # where the sweep rejects the example itself (a merge that only broadcasts a 1-pixel
        # branch), sizes from there on are 0 by design; the rejection must be that broadcast
        rejected = [n for n in g.nodes if sweep.invalid_at(n, name)[pos]]
        for node in rejected:
            _assert_traced_broadcast(g, node, where)
        past_rejected = _downstream_of(g, rejected)

        for node, data in g.nodes(data=True):
            shapes = data.get("shapes")
            traced = shapes[0] if shapes else None
            if traced is None:
                continue
            spatial = sweep.spatial(node, name)
            if len(traced) < 3:
                assert spatial is None, f"{where}: {node} traced {traced} but the sweep has spatial axes"
                continue
            if node in past_rejected:
                continue
            if spatial is None:
                assert node in past_unknown, f"{where}: {node} traced {traced}, sweep has no size"
                continue
            got = tuple(int(a[pos]) for a in spatial)
            assert got == tuple(traced[2:]), (
                f"{where}: {node} ({data['op']}) formula {got} != traced {tuple(traced[2:])}"
            )
            checked += 1
    if path.stem not in NO_GRAPH:
        assert checked > 0, f"{_rel(path)}: no node checked"


def test_allowed_unknowns_are_still_needed():
    """Each listed exception really occurs (a stale entry would hide nothing, but mislead)."""
    for (stem, model, node), reason in ALLOWED_UNKNOWN.items():
        path = next(p for p in ALL_FILES if p.stem == stem)
        report = next(r for r in linted(path) if r.model == model)
        assert (node, reason) in report.graph.graph["sizes"].unknown


# -- 2. brute force: the square mask == what PyTorch does at every size 1..128 -------------------


_MERGES = {
    "add", "add_", "__add__", "__radd__", "__iadd__",
    "sub", "sub_", "__sub__", "__rsub__", "__isub__", "rsub", "subtract",
    "mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply",
    "div", "div_", "__truediv__", "__rtruediv__", "__itruediv__", "true_divide", "divide",
    "cat", "concat", "concatenate",
}
_REDUCTIONS = {"mean", "amax", "amin", "sum", "max", "min"}


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _is_size_constant(func, args, kwargs, out) -> bool:
    """Global/adaptive pooling to a fixed size: the output is the same at every input size."""
    name = getattr(func, "__name__", "")
    if "adaptive_" in name:
        size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
        sizes = size if isinstance(size, (tuple, list)) else (size,)
        return all(s is not None for s in sizes)
    if name in _REDUCTIONS and isinstance(out, torch.Tensor) and args:
        x = args[0]
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not isinstance(x, torch.Tensor) or x.ndim < 3 or dims is None:
            return False
        dims = dims if isinstance(dims, (tuple, list)) else (dims,)
        spatial = set(range(2, x.ndim))
        return {d % x.ndim for d in dims if isinstance(d, int)} >= spatial
    return False


def _broadcast_watcher():
    """A TorchFunctionMode recording the first merge where a size-dependent operand broadcasts
    a spatial 1 over a wider dim. Size-dependence flows from the input through every op except
    global/adaptive pooling to a fixed size (the sweep's "1 at every input size")."""
    from torch.overrides import TorchFunctionMode

    class Watcher(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.dependent: dict[int, torch.Tensor] = {}  # id -> tensor (kept alive: ids stay unique)
            self.broadcast: str | None = None

        def mark(self, t):
            self.dependent[id(t)] = t

        def is_dep(self, t):
            return self.dependent.get(id(t)) is t

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            ins = list(_tensors(args)) + list(_tensors(kwargs))
            deps = [t for t in ins if self.is_dep(t)]
            if not deps:
                return out
            name = getattr(func, "__name__", "")
            if name in _MERGES and isinstance(out, torch.Tensor) and self.broadcast is None:
                for t in deps:
                    shift = out.ndim - t.ndim
                    for i in range(max(2, shift), out.ndim):
                        if t.shape[i - shift] == 1 and out.shape[i] > 1:
                            self.broadcast = f"{name} broadcasts {tuple(t.shape)} to {tuple(out.shape)}"
                            break
            if not _is_size_constant(func, args, kwargs, out):
                for t in _tensors(out):
                    self.mark(t)
            return out

    return Watcher()


def torch_admits(model, shape) -> tuple[bool, str | None]:
    """(runs and no size-dependent 1-pixel broadcast, why not)."""
    watcher = _broadcast_watcher()
    x = torch.zeros(shape)
    try:
        with torch.inference_mode(), watcher:
            watcher.mark(x)
            model(x)
    except Exception as exc:  # the truth includes every way a forward fails
        return False, f"{type(exc).__name__}: {exc}".splitlines()[0]
    if watcher.broadcast:
        return False, watcher.broadcast
    return True, None


def _instance(path: Path, report):
    return model_from_file(path, report.model, "_sizes_fixture")


@pytest.mark.parametrize("path", [p for p in FIXTURE_MODELS + REGRESSIONS
                                  if p.stem not in NO_GRAPH], ids=_rel)
def test_square_mask_equals_real_forward_1_to_128(path):
    compared = 0
    for report in linted(path):
        g = report.graph
        sweep = g.graph["sizes"]
        where = f"{_rel(path)}:{report.model}"
        model = _instance(path, report)
        params = sum(p.numel() for p in model.parameters())
        if params >= MAX_PARAMS:
            continue  # kept fast: only the small models are run at 128 sizes
        shape = report.input_shapes[0]
        assert len(shape) == 4, where
        assert sweep.lo == 1 and sweep.hi >= 128, (sweep.lo, sweep.hi)
        got = sweep.admissible[:128]
        expected, why = [], {}
        for n in BRUTE_SIZES:
            ok, reason = torch_admits(model, (1, shape[1], n, n))
            expected.append(ok)
            if reason:
                why[n] = reason
        expected = np.array(expected)
        # undecided sizes are claimed neither way (JSON "undecided"); every other size must agree
        undecided = sweep.undecided_for("square")[:128]
        wrong = [n for n in BRUTE_SIZES if expected[n - 1] != got[n - 1] and not undecided[n - 1]]
        detail = [(n, "sweep admits" if got[n - 1] else f"sweep rejects at {sweep.first_failure(n)}",
                   why.get(n, "torch runs")) for n in wrong[:5]]
        assert not wrong, f"{where}: sweep and torch disagree at n = {wrong[:20]}: {detail}"
        compared += 1
    if not compared:
        pytest.skip(f"every model has >= {MAX_PARAMS} parameters (kept out to stay fast)")


@pytest.mark.parametrize("stem, model, n, admits, why", [
    ("skip_connection_mismatch_bad", "SilentBroadcast", 16, False, "add broadcasts (1, 16, 1, 1)"),
    ("skip_connection_mismatch_good", "GlobalContext", 16, True, None),  # pooled to 1: intended
    ("hardcoded_flatten_good", "MeanHead", 16, True, None),
    ("broadcast_after_whole_map_conv", "Generated", 6, False, "add broadcasts (1, 1, 1, 1)"),
    ("hardcoded_flatten_bad", "LeNet", 64, False, "RuntimeError: shape '[-1, 400]'"),
    ("hardcoded_flatten_bad", "LeNet", 52, True, None),  # view(-1, 400) makes batch 4: it runs
])
def test_the_truth_detector(stem, model, n, admits, why):
    """The brute-force truth itself: a 1-pixel broadcast and a failing forward count as
    failures, global pooling and a batch-changing view do not."""
    path = next(p for p in ALL_FILES if p.stem == stem)
    report = next(r for r in linted(path) if r.model == model)
    ok, reason = torch_admits(_instance(path, report), (1, report.input_shapes[0][1], n, n))
    assert ok is admits, reason
    assert (reason is None) if why is None else reason.startswith(why), reason
