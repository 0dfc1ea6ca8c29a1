"""The input-size sweep against real PyTorch forwards, size by size.

Each model is written once as a list of layers; a small builder turns it into both an IR graph
(by hand, no frontend) and a torch forward. The forward is the oracle: a size is admissible iff
it runs without error, produces no empty map, and no merge silently broadcasts a 1-pixel
branch (only the declared squeeze-and-excitation branch may broadcast).
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from archlint.graph import Attrs, add_op, new_graph
from archlint.passes import run_passes
from archlint.passes import size_forward
from archlint.passes.sizes import describe_sizes, expand_progressions, input_size_pass, progressions

torch = pytest.importorskip("torch")
nn, F = torch.nn, torch.nn.functional

MERGE_OPS = ("add", "sub", "mul", "div", "concat")



class Net:
    """Layers recorded once, run as torch and described as IR."""

    def __init__(self, channels=2, nd=2):
        self.channels, self.nd = channels, nd
        self.layers = []  # (name, op, attrs, fn, inputs, may_broadcast)

    def add(self, name, op, fn, inputs, attrs=None, may_broadcast=False):
        self.layers.append((name, op, attrs or Attrs(), fn, list(inputs), may_broadcast))
        return name

    def run(self, spatial):
        """Output per node, or the reason the forward is not admissible."""
        out = {"x": torch.randn(1, self.channels, *spatial)}
        with torch.no_grad():
            for name, op, _, fn, inputs, may_broadcast in self.layers:
                args = [out[i] for i in inputs]
                try:
                    y = fn(*args)
                except RuntimeError as exc:
                    return None, f"{name}: {exc}"
                if y.numel() == 0:
                    return None, f"{name}: empty"
                if op in ("add", "sub", "mul", "div") and not may_broadcast:
                    if len({tuple(a.shape[2:]) for a in args}) > 1:
                        return None, f"{name}: broadcast"
                out[name] = y
        return out, None

    def graph(self, example):
        outs, why = self.run(example)
        assert outs is not None, why
        g = new_graph("net", None, "torch")
        add_op(g, "x", "input", shapes=[tuple(outs["x"].shape)])
        for name, op, attrs, _, inputs, _ in self.layers:
            add_op(g, name, op, inputs=inputs, attrs=attrs, shapes=[tuple(outs[name].shape)])
        return g


def win(k, s=1, p=0, d=1, nd=2, **kw):
    return Attrs(kernel=(k,) * nd, stride=(s,) * nd, dilation=(d,) * nd, padding=((p, p),) * nd, **kw)


def conv(net, name, src, cin, cout, k, s=1, p=0, d=1):
    m = nn.Conv2d(cin, cout, k, s, p, d)
    return net.add(name, "conv", m, [src], win(k, s, p, d, in_channels=cin, out_channels=cout))


def classifier_net():
    net = Net()
    conv(net, "c1", "x", 2, 3, 3, 2, 1)
    net.add("p1", "max_pool", nn.MaxPool2d(3, 2, 1, ceil_mode=True), ["c1"], win(3, 2, 1, ceil_mode=True))
    conv(net, "c2", "p1", 3, 3, 3, 1, 0, 2)
    net.add("p2", "avg_pool", nn.AvgPool2d(2, ceil_mode=True), ["c2"], win(2, 2, 0, ceil_mode=True))
    net.add("flat", "flatten", nn.Flatten(), ["p2"], Attrs(axis=1, end_axis=-1))
    net.add("fc", "linear", nn.Linear(3 * 4 * 4, 5), ["flat"], Attrs(in_features=48, out_features=5))
    return net, (40, 40)


def unet_net(transpose=False, crop=False):
    """Two-level U-Net: pool / conv / upsample (or conv_transpose) / cat with the skip."""
    net = Net()
    conv(net, "enc", "x", 2, 4, 3, 1, 0 if crop else 1)
    net.add("down", "max_pool", nn.MaxPool2d(2), ["enc"], win(2, 2))
    conv(net, "mid", "down", 4, 4, 3, 1, 1)
    net.add("down2", "max_pool", nn.MaxPool2d(2), ["mid"], win(2, 2))
    conv(net, "bottom", "down2", 4, 4, 3, 1, 1)
    if transpose:
        m = nn.ConvTranspose2d(4, 4, 2, 2)
        net.add("up2", "conv_transpose", m, ["bottom"], win(2, 2, 0, output_padding=(0, 0)))
    else:
        net.add("up2", "upsample", nn.Upsample(scale_factor=2), ["bottom"], Attrs(scale=(2.0, 2.0), mode="nearest"))
    net.add("cat2", "concat", lambda a, b: torch.cat([a, b], 1), ["up2", "mid"], Attrs(axis=1))
    conv(net, "dec2", "cat2", 8, 4, 3, 1, 1)
    net.add("up1", "upsample", nn.Upsample(scale_factor=2, mode="bilinear"), ["dec2"],
            Attrs(scale=(2.0, 2.0), mode="bilinear", align_corners=False))
    skip = "enc"
    if crop:  # the original U-Net crops the skip to the decoder's size
        net.add("crop", "slice", lambda t: t[:, :, 2:-2, 2:-2], ["enc"],
                Attrs(slices=((2, -2, 1), (2, -2, 1))))
        conv(net, "dec1pre", "up1", 4, 4, 5, 1, 0)
        skip, up = "crop", "dec1pre"
    else:
        up = "up1"
    net.add("cat1", "concat", lambda a, b: torch.cat([a, b], 1), [up, skip], Attrs(axis=1))
    conv(net, "out", "cat1", 8, 1, 1)
    return net, (34, 34) if crop else (32, 32)


def residual_net():
    """A residual add whose shortcut is strided: it agrees at 1x1 only by broadcasting."""
    net = Net()
    conv(net, "a", "x", 2, 2, 3, 2, 1)
    conv(net, "b", "x", 2, 2, 1, 3, 0)
    net.add("sum", "add", lambda p, q: p + q, ["a", "b"])
    return net, (4, 4)


def se_net():
    """Squeeze-and-excitation: the excitation is 1x1 at every size and broadcasts by design."""
    net = Net(channels=4)
    conv(net, "c", "x", 4, 4, 3, 1, 1)
    net.add("gap", "global_pool", lambda t: t.mean((2, 3), keepdim=True), ["c"], Attrs(extra={"keepdim": True}))
    net.add("sq", "reshape", lambda t: t.view(t.size(0), -1), ["gap"], Attrs(target_shape=(None, -1)))
    net.add("fc", "linear", nn.Linear(4, 4), ["sq"], Attrs(in_features=4, out_features=4))
    net.add("ex", "reshape", lambda t: t.view(t.size(0), t.size(1), 1, 1), ["fc"],
            Attrs(target_shape=(None, None, 1, 1)))
    net.add("scale", "mul", lambda a, b: a * b, ["c", "ex"], may_broadcast=True)
    conv(net, "down", "scale", 4, 4, 3, 2, 0)
    return net, (16, 16)


def fpn_net():
    """Feature pyramid: a stride-2 lateral added to an upsampled coarser map; pad and interpolate-to-size."""
    net = Net()
    conv(net, "c2", "x", 2, 2, 3, 2, 1)
    conv(net, "c3", "c2", 2, 2, 3, 2, 1)
    net.add("up", "upsample", nn.Upsample(scale_factor=2), ["c3"], Attrs(scale=(2.0, 2.0), mode="nearest"))
    net.add("p2", "add", lambda a, b: a + b, ["c2", "up"])
    net.add("pad", "pad", lambda t: F.pad(t, (1, 0, 1, 0), mode="replicate"), ["p2"],
            Attrs(padding=((1, 0), (1, 0)), padding_mode="replicate"))
    net.add("back", "upsample", lambda t, ref: F.interpolate(t, size=ref.shape[2:]), ["pad", "x"],
            Attrs(size_from="x", mode="nearest"))
    net.add("res", "sub", lambda a, b: a - b, ["back", "x"])
    return net, (24, 24)


MODELS = {
    "classifier": classifier_net,
    "unet": unet_net,
    "unet_transpose": lambda: unet_net(transpose=True),
    "unet_crop": lambda: unet_net(crop=True),
    "residual": residual_net,
    "se": se_net,
    "fpn": fpn_net,
}


def brute_force(net, sizes, shape_of):
    return np.array([net.run(shape_of(n))[1] is None for n in sizes])


@pytest.fixture(scope="module", params=sorted(MODELS))
def swept(request):
    net, example = MODELS[request.param]()
    g = net.graph(example)
    run_passes(g, sizes_range=(1, 128))
    return request.param, net, example, g


def test_sweep_equals_real_forward_at_every_size(swept):
    name, net, _, g = swept
    sweep = g.graph["sizes"]
    expected = brute_force(net, range(1, 129), lambda n: (n, n))
    got = sweep.admissible
    wrong = [n for n, e, a in zip(range(1, 129), expected, got) if e != a]
    assert not wrong, f"{name}: sweep and torch disagree at n = {wrong[:10]}"
    assert expected.any(), "the model should run at some size"
    assert sweep.complete, sweep.unknown


def test_height_sweep_equals_real_forward(swept):
    name, net, example, g = swept
    sweep = g.graph["sizes"]
    expected = brute_force(net, range(1, 129), lambda n: (n, example[1]))
    assert list(sweep.admissible_for("height")) == list(expected), name


def test_formulas_agree_with_traced_shapes_at_the_example(swept):
    _, _, example, g = swept
    sweep = g.graph["sizes"]
    for node in g.nodes:
        shape = g.nodes[node]["shapes"][0]
        spatial = sweep.spatial(node, sweep="height")
        if len(shape) < 3:
            assert spatial is None
            continue
        at_example = tuple(int(a[example[0] - 1]) for a in spatial)
        assert at_example == tuple(shape[2:]), node


def test_admissible_json_round_trips(swept):
    _, _, _, g = swept
    sweep, table = g.graph["sizes"], g.graph["admissible_sizes"]
    assert json.loads(json.dumps(table)) == table
    assert table["range"] == [1, 128]
    assert set(table) == {"range", "square", "height", "width", "undecided", "exact"}
    for key in ("square", "height", "width"):
        assert (expand_progressions(table[key], 1, 128) == sweep.admissible_for(key)).all(), key
        for p in table[key]:
            assert set(p) == {"start", "stop", "step"} and p["step"] >= 1


def test_known_answers():
    net, example = unet_net()
    g = net.graph(example)
    run_passes(g, sizes_range=(1, 256))
    sweep = g.graph["sizes"]
    assert sweep.describe(sweep.admissible) == "n >= 4 with n % 4 == 0"
    assert g.graph["admissible_sizes"]["square"] == [{"start": 4, "stop": None, "step": 4}]
    assert g.graph["sizes_summary"] == "H = W: n >= 4 with n % 4 == 0; smallest 4; example 32x32 admissible (exact)"
    assert sweep.smallest() == 4 and sweep.nearest(30) == (28, 32) and sweep.nearest(32) == (32, 32)
    # the first failure at an odd size is the first merge that disagrees
    assert sweep.first_failure(30) == "cat2" and sweep.first_failure(32) is None
    assert sweep.invalid_at("cat2")[30 - 1] and not sweep.invalid_at("cat1")[30 - 1]
    assert sweep.spatial("up2")[0][30 - 1] == 14 and sweep.spatial("mid")[0][30 - 1] == 15
    # the residual net: 1x1 agrees only by broadcasting; the SE net broadcasts by design
    net, example = residual_net()
    g = net.graph(example)
    run_passes(g, sizes_range=(1, 64))
    # n = 3: the main path is 2x2, the shortcut 1x1; torch would broadcast it silently
    assert g.graph["sizes"].admissible[2 - 1] and not g.graph["sizes"].admissible[3 - 1]
    assert net.layers[2][3](torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 1, 1)).shape[2:] == (2, 2)
    net, example = se_net()
    g = net.graph(example)
    run_passes(g, sizes_range=(1, 64))
    assert g.graph["sizes"].describe(g.graph["sizes"].admissible) == "all n >= 3"


def test_unknown_op_is_reported_not_guessed():
    g = new_graph("m", None, "torch")
    add_op(g, "x", "input", shapes=[(1, 2, 16, 16)])
    add_op(g, "odd", "unknown", inputs=["x"], origin="torch.roll", shapes=[(1, 2, 16, 16)])
    add_op(g, "c", "conv", inputs=["odd"], attrs=win(3), shapes=[(1, 2, 14, 14)])
    run_passes(g, sizes_range=(1, 64))
    sweep = g.graph["sizes"]
    assert not sweep.complete and sweep.unknown[0][0] == "odd"
    assert sweep.spatial("c") is None and sweep.spatial("x") is not None
    assert "sizes past odd are unknown" in g.graph["sizes_summary"]


def test_formula_disagreeing_with_traced_shape_becomes_unknown():
    g = new_graph("m", None, "torch")
    add_op(g, "x", "input", shapes=[(1, 2, 16, 16)])
    add_op(g, "c", "conv", inputs=["x"], attrs=win(3), shapes=[(1, 2, 15, 15)])  # wrong attrs
    run_passes(g, sizes_range=(1, 64))
    sweep = g.graph["sizes"]
    assert sweep.unknown and sweep.unknown[0][0] == "c" and sweep.spatial("c") is None


def test_hardcoded_flatten_admits_one_size_class():
    g = new_graph("m", None, "torch")
    add_op(g, "x", "input", shapes=[(2, 3, 32, 32)])
    add_op(g, "c", "conv", inputs=["x"], attrs=win(3, 2, 1), shapes=[(2, 8, 16, 16)])
    add_op(g, "v", "reshape", inputs=["c"], attrs=Attrs(target_shape=(-1, 8 * 16 * 16)), shapes=[(2, 2048)])
    add_op(g, "fc", "linear", inputs=["v"], attrs=Attrs(in_features=2048, out_features=10), shapes=[(2, 10)])
    sweep = input_size_pass(g, (1, 128))
    # view(-1, 2048) runs whenever 2*8*h*w divides by 2048: h = w = 16 (n = 31, 32) and n = 63, 64, ...
    expected = [n for n in range(1, 129) if (2 * 8 * ((n - 1) // 2 + 1) ** 2) % 2048 == 0]
    assert list(np.flatnonzero(sweep.admissible) + 1) == expected


def test_one_dimensional_model_keys():
    g = new_graph("m", None, "torch")
    add_op(g, "x", "input", shapes=[(1, 1, 50)])
    add_op(g, "c", "conv", inputs=["x"], attrs=win(5, 2, 0, nd=1), shapes=[(1, 1, 23)])
    run_passes(g, sizes_range=(1, 100))
    table = g.graph["admissible_sizes"]
    assert set(table) == {"range", "square", "length", "undecided", "exact"}
    assert table["square"] == table["length"] == [{"start": 5, "stop": None, "step": 1}]
    assert g.graph["sizes_summary"].startswith("L: all n >= 5")


def test_progressions_round_trip_on_random_masks():
    rng = np.random.RandomState(0)
    for trial in range(200):
        n = rng.randint(1, 300)
        kind = trial % 3
        if kind == 0:
            mask = rng.rand(n) < rng.rand()
        else:
            period, start = rng.randint(1, 40), rng.randint(0, 50)
            residues = rng.rand(period) < 0.4
            mask = residues[np.arange(n) % period] & (np.arange(n) >= start)
            cut = rng.randint(0, n + 1)
            mask[:cut] |= rng.rand(cut) < 0.2  # an irregular prefix before the periodic tail
        lo = rng.randint(1, 10)
        progs = progressions(mask, lo)
        assert (expand_progressions(progs, lo, lo + n - 1) == mask).all()
        assert describe_sizes(mask, lo, lo + n - 1)


def test_describe_examples():
    n = np.arange(1, 4097)
    assert describe_sizes(n % 32 == 0, 1, 4096) == "n >= 32 with n % 32 == 0"
    assert describe_sizes((n >= 64) & (n <= 67), 1, 4096) == "64..67 only"
    assert describe_sizes(n < 0, 1, 4096) == "none"
    assert describe_sizes(n >= 5, 1, 4096) == "all n >= 5"
    assert describe_sizes((n % 4 == 3) & (n >= 7), 1, 4096) == "n >= 7 with n % 4 == 3"


def chain_graph(nodes, strided_every=0):
    g = new_graph("m", None, "onnx")
    prev = add_op(g, "x", "input", shapes=[(1, 3, 224, 224)])
    for i in range(nodes):
        if strided_every and i % strided_every == 0:
            prev = add_op(g, f"s{i}", "conv", inputs=[prev], attrs=win(3, 1, 0))
        elif i % 3 == 0:
            prev = add_op(g, f"c{i}", "conv", inputs=[prev], attrs=win(3, 1, 1))
        elif i % 3 == 1:
            prev = add_op(g, f"n{i}", "norm", inputs=[prev])
        else:
            prev = add_op(g, f"r{i}", "pointwise", inputs=[prev])
    return g


def test_30k_node_chain_is_fast():
    g = chain_graph(30_000)
    start = time.process_time()
    run_passes(g)
    elapsed = time.process_time() - start
    assert elapsed < 3.0, elapsed  # CPU time: about 1 s here, whatever else the box runs
    assert g.graph["sizes"].describe(g.graph["sizes"].admissible) == "all n >= 1"


def test_evicted_arrays_are_recomputed_exactly(monkeypatch):
    g = chain_graph(300, strided_every=7)
    full = input_size_pass(g, (1, 512))
    reference = {n: full.spatial(n) for n in g.nodes}
    monkeypatch.setattr(size_forward, "MEMORY_BUDGET", 0)
    lean = input_size_pass(g, (1, 512))
    def arrays(sweep):
        return {id(d) for dims, _ in sweep._values.values() if dims for d in dims if isinstance(d, np.ndarray)}

    assert len(arrays(lean)) < len(arrays(full)) // 4  # most arrays were dropped
    for node in list(g.nodes)[::-7]:
        got, want = lean.spatial(node), reference[node]
        assert all((a == b).all() for a, b in zip(got, want)), node
    assert (lean.admissible == full.admissible).all()
