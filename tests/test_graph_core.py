"""The graph core's fast paths give exactly what the plain networkx calls give.

add_op writes networkx's node and adjacency dicts directly, the topological order and the
per-kind index are computed once per graph, and the JSON reporter encodes node rows a chunk at
a time: each is checked here against the slow, obvious way.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import networkx as nx
import pytest

from archlint.graph import add_op, input_nodes, new_graph, node_table, ops, ops_of_kind

ROOT = Path(__file__).resolve().parents[1]


def _diamond():
    g = new_graph("m", None, "onnx")
    add_op(g, "x", "input", shapes=((1, 3, 8, 8),))
    add_op(g, "a", "conv", inputs=["x"], shapes=((1, 4, 8, 8),))
    add_op(g, "b", "pointwise", inputs=["a"], shapes=((1, 4, 8, 8),))
    add_op(g, "c", "conv", inputs=["x"], shapes=((1, 4, 8, 8),))
    add_op(g, "s", "add", inputs=["b", "c"], shapes=((1, 4, 8, 8),))
    add_op(g, "d", "add", inputs=["s", "s"], shapes=((1, 4, 8, 8),))  # x + x: two slots
    return g


def test_add_op_builds_what_networkx_builds():
    g = _diamond()
    plain = nx.DiGraph()
    for name, data in g.nodes(data=True):
        plain.add_node(name, **data)
    for src, dst, data in g.edges(data=True):
        plain.add_edge(src, dst, **data)
    assert dict(g.adj) == dict(plain.adj) and dict(g.pred) == dict(plain.pred)
    assert dict(g.nodes(data=True)) == dict(plain.nodes(data=True))
    assert g.edges["s", "d"]["slots"] == [0, 1] and g.in_degree("d") == 1
    assert sorted(g.successors("x")) == ["a", "c"] and list(g.predecessors("s")) == ["b", "c"]
    assert nx.is_directed_acyclic_graph(g)
    with pytest.raises(ValueError, match="duplicate"):
        add_op(g, "a", "conv", inputs=["x"])
    with pytest.raises(ValueError, match="not in the graph"):
        add_op(g, "e", "conv", inputs=["nowhere"])
    assert "e" not in g


def test_per_kind_index_is_in_topological_order_and_follows_new_nodes():
    g = _diamond()
    assert ops_of_kind(g, "conv") == ["a", "c"]
    assert ops_of_kind(g, "add", "conv") == ["a", "c", "s", "d"]  # merged in graph order
    assert ops_of_kind(g, "linear") == [] and input_nodes(g) == ["x"]
    add_op(g, "e", "conv", inputs=["d"])
    assert ops_of_kind(g, "conv") == ["a", "c", "e"] and list(ops(g))[-1] == "e"
    assert node_table(g)["e"] is g.nodes["e"]


def test_order_of_a_graph_built_out_of_order_and_of_a_subgraph():
    g = _diamond()
    shuffled = nx.DiGraph()
    shuffled.graph.update(g.graph)
    for name in reversed(list(g.nodes)):
        shuffled.add_node(name, **g.nodes[name])
    shuffled.add_edges_from(g.edges(data=True))
    order = list(ops(shuffled))
    assert all(order.index(u) < order.index(v) for u, v in shuffled.edges)
    convs = ops_of_kind(shuffled, "conv")
    assert sorted(convs) == ["a", "c"] and all(order.index(convs[0]) < order.index(n) for n in convs[1:])
    # a subgraph view shares g.graph with its parent: neither may read the other's order
    part = g.subgraph(["x", "a", "b"])
    assert list(ops(part)) == ["x", "a", "b"] and ops_of_kind(part, "conv") == ["a"]
    assert ops_of_kind(g, "conv") == ["a", "c"]


def test_compact_json_is_exactly_the_plain_encoding(tmp_path):
    import onnx

    from archlint.api import lint
    from archlint.findings import Report
    from archlint.reporters import json as json_reporter

    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from synthetic_onnx import residual_chain
    finally:
        sys.path.remove(str(ROOT / "bench"))
    report = Report()
    for nodes in (7, 10, 13):
        path = tmp_path / f"chain{nodes}.onnx"
        onnx.save(residual_chain(nodes), path)
        report.models.extend(lint(path).models)
    report.models.extend(lint(tmp_path / "missing.onnx").models)  # an entry with no graph
    out = io.StringIO()
    json_reporter.render(report, out)
    assert out.getvalue() == json.dumps(json_reporter.report_to_json(report)) + "\n"
    assert len(json.loads(out.getvalue())["models"]) == len(report.models)
    assert sys.modules["archlint.reporters.json"] is json_reporter


def test_nodes_where_asks_once_per_record_and_keeps_the_order():
    from archlint.graph import Attrs
    from archlint.rule import RuleContext

    plain, dilated = Attrs(kernel=(3, 3), dilation=(1, 1)), Attrs(kernel=(3, 3), dilation=(2, 2))
    g = new_graph("m", None, "onnx")
    add_op(g, "x", "input", shapes=((1, 3, 8, 8),))
    previous = "x"
    for i, attrs in enumerate([plain, dilated, plain, plain, dilated, Attrs(dilation=(2, 2))]):
        add_op(g, f"c{i}", "conv", inputs=[previous], attrs=attrs)
        add_op(g, f"p{i}", "max_pool", inputs=[f"c{i}"], attrs=plain)
        previous = f"p{i}"
    asked = []

    def is_dilated(attrs):
        asked.append(attrs)
        return any(d > 1 for d in attrs.dilation)

    ctx = RuleContext(graph=g, frontend="onnx", target="m")
    assert ctx.nodes_where(is_dilated, "conv") == ["c1", "c4", "c5"]
    assert len(asked) == 3  # plain, dilated and the third record: once each, not once per node
    # the plain, obvious way gives the same nodes in the same order, over two kinds too
    for kinds in (("conv",), ("conv", "max_pool"), ("max_pool",), ("linear",)):
        for keep in (is_dilated, lambda a: True, lambda a: False, lambda a: a is plain):
            expected = [n for n in ops_of_kind(g, *kinds) if keep(g.nodes[n]["attrs"])]
            assert ctx.nodes_where(keep, *kinds) == expected
    add_op(g, "c6", "conv", inputs=["p5"], attrs=dilated)  # a node added later is seen
    assert ctx.nodes_where(is_dilated, "conv")[-1] == "c6"
    assert RuleContext(graph=None, frontend="onnx", target="m").nodes_where(is_dilated) == []


def test_window_facts_index_the_nodes_they_find_and_notice_new_nodes(monkeypatch):
    from archlint.graph import Attrs
    from archlint.passes import _window_facts
    from archlint.passes import strided_rounding as sr
    from archlint.passes.fact_index import recorded

    halving = Attrs(kernel=(2, 2), stride=(2, 2), dilation=(1, 1), padding=((0, 0), (0, 0)))
    plain = Attrs(kernel=(3, 3), stride=(1, 1), dilation=(1, 1), padding=((1, 1), (1, 1)))
    g = new_graph("m", None, "onnx")
    add_op(g, "x", "input", shapes=((1, 3, 7, 7),))
    add_op(g, "keep", "conv", inputs=["x"], attrs=plain, shapes=((1, 4, 7, 7),))
    add_op(g, "odd", "conv", inputs=["keep"], attrs=halving, shapes=((1, 4, 3, 3),))  # 7 -> 3
    _window_facts(g)
    assert sr.rounding_nodes(g) == ["odd"]
    assert [n for n in ops(g) if sr.rounding_at(g, n) is not None] == ["odd"]  # the plain way
    add_op(g, "again", "conv", inputs=["x"], attrs=halving, shapes=((1, 4, 3, 3),))
    assert sr.rounding_nodes(g) == ["odd", "again"]  # a stale index runs the pass again

    def broken(graph):
        raise RuntimeError("boom")

    monkeypatch.setattr(sr, "rounding_pass", broken)
    _window_facts(g)  # a failing pass: defaults on every node, an empty index, no second run
    assert recorded(g, sr.ROUNDING_INDEX) == [] and sr.rounding_nodes(g) == []
    assert "boom" in g.graph["passes_error"] and sr.rounding_at(g, "odd") is None
