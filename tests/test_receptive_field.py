"""Receptive fields: published numbers for VGG-16 and AlexNet, and an executable oracle.

The oracle builds each random CNN twice: as an IR graph by hand, and as a real torch model
with all-ones weights (max pools become average pools, or all-ones convolutions where they are
dilated), in float64. The input pixels that reach one output unit are exactly those with a
nonzero gradient, so their extent must equal the predicted span of that unit.
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from archlint.graph import Attrs, add_op, new_graph
from archlint.passes.receptive_field import ReceptiveField, receptive_field_pass


def window(k, s=1, p=0, d=1, nd=2, **kw):
    return Attrs(kernel=(k,) * nd, stride=(s,) * nd, dilation=(d,) * nd,
                 padding=((p, p),) * nd, **kw)


def chain(layers, nd=2, size=224):
    """An IR chain from ``[(name, op, attrs), ...]``; only the input carries a shape."""
    g = new_graph("m", None, "torch")
    prev = add_op(g, "x", "input", shapes=[(1, 3) + (size,) * nd])
    for name, op, attrs in layers:
        prev = add_op(g, name, op, inputs=[prev], attrs=attrs)
    return g


def vgg16_layers():
    layers, block_sizes = [], (2, 2, 3, 3, 3)
    for b, convs in enumerate(block_sizes, start=1):
        for c in range(1, convs + 1):
            layers.append((f"conv{b}_{c}", "conv", window(3, 1, 1)))
            layers.append((f"relu{b}_{c}", "pointwise", Attrs()))
        layers.append((f"pool{b}", "max_pool", window(2, 2)))
    return layers


def test_vgg16_published_receptive_fields():
    g = chain(vgg16_layers())
    receptive_field_pass(g)
    expected = {"pool1": 6, "pool2": 16, "pool3": 44, "pool4": 100, "conv5_3": 196, "pool5": 212}
    for name, r in expected.items():
        rf = g.nodes[name]["rf"]
        assert rf[0] == rf[1] and rf[0].size == r, (name, rf)
    pool5 = g.nodes["pool5"]["rf"][0]
    assert pool5.stride == 32 and pool5.padding == 90
    assert pool5.center_offset == Fraction(211, 2) - 90
    assert g.nodes["relu1_1"]["rf"] == g.nodes["conv1_1"]["rf"]


def test_alexnet_published_receptive_field():
    layers = [
        ("conv1", "conv", window(11, 4, 2)), ("pool1", "max_pool", window(3, 2)),
        ("conv2", "conv", window(5, 1, 2)), ("pool2", "max_pool", window(3, 2)),
        ("conv3", "conv", window(3, 1, 1)), ("conv4", "conv", window(3, 1, 1)),
        ("conv5", "conv", window(3, 1, 1)), ("pool5", "max_pool", window(3, 2)),
    ]
    g = chain(layers, size=227)
    receptive_field_pass(g)
    pool5 = g.nodes["pool5"]["rf"][0]
    assert pool5.size == 195 and pool5.stride == 32


def test_flatten_head_and_global_pool():
    layers = [("conv", "conv", window(3, 2, 1)), ("gap", "global_pool", Attrs()),
              ("flat", "flatten", Attrs(axis=1)), ("fc", "linear", Attrs(in_features=3, out_features=2))]
    g = chain(layers)
    g.nodes["flat"]["shapes"] = ((1, 3),)
    g.nodes["fc"]["shapes"] = ((1, 2),)
    receptive_field_pass(g)
    assert g.nodes["conv"]["rf"][0] == ReceptiveField(3, Fraction(2), Fraction(1))
    assert g.nodes["gap"]["rf"] == (None, None) and g.nodes["gap"]["rf_global"]
    assert g.nodes["flat"]["rf"] is None and g.nodes["fc"]["rf"] is None
    assert g.nodes["fc"]["rf_global"] and not g.nodes["conv"]["rf_global"]


def test_unknown_op_is_unknown_never_a_guess():
    g = chain([("conv", "conv", window(3)), ("odd", "unknown", Attrs()), ("conv2", "conv", window(3))])
    receptive_field_pass(g)
    assert g.nodes["odd"]["rf"] == (None, None)
    assert g.nodes["conv2"]["rf"] == (None, None)


def squeeze_excitation_graph():
    g = new_graph("se", None, "torch")
    add_op(g, "x", "input", shapes=[(1, 8, 32, 32)])
    add_op(g, "conv", "conv", inputs=["x"], attrs=window(3, 1, 1), shapes=[(1, 8, 32, 32)])
    add_op(g, "gap", "global_pool", inputs=["conv"], shapes=[(1, 8, 1, 1)])
    add_op(g, "squeeze", "reshape", inputs=["gap"], attrs=Attrs(target_shape=(None, -1)), shapes=[(1, 8)])
    add_op(g, "fc", "linear", inputs=["squeeze"], attrs=Attrs(in_features=8, out_features=8), shapes=[(1, 8)])
    add_op(g, "excite", "reshape", inputs=["fc"], attrs=Attrs(target_shape=(None, None, 1, 1)),
           shapes=[(1, 8, 1, 1)])
    add_op(g, "scale", "mul", inputs=["conv", "excite"], shapes=[(1, 8, 32, 32)])
    return g


def test_squeeze_excitation_branch_is_global_and_excluded_from_alignment():
    g = squeeze_excitation_graph()
    receptive_field_pass(g)
    assert g.nodes["excite"]["rf_global"] and g.nodes["excite"]["rf"] == (None, None)
    assert g.nodes["scale"]["rf"] == g.nodes["conv"]["rf"]
    assert g.nodes["scale"]["rf_aligned"] is True


def two_branch_graph(left, right):
    g = new_graph("m", None, "torch")
    add_op(g, "x", "input", shapes=[(1, 1, 64)])
    for side, layers in (("a", left), ("b", right)):
        prev = "x"
        for i, (op, attrs) in enumerate(layers):
            prev = add_op(g, f"{side}{i}", op, inputs=[prev], attrs=attrs)
        g.nodes[prev]["branch_end"] = True
    ends = [n for n in g.nodes if g.nodes[n].get("branch_end")]
    add_op(g, "merge", "add", inputs=ends)
    return g


def test_merge_alignment():
    same_centre = two_branch_graph([("conv", window(3, 1, 1, nd=1))], [("conv", window(5, 1, 2, nd=1))])
    receptive_field_pass(same_centre)
    assert same_centre.nodes["merge"]["rf_aligned"] is True
    assert same_centre.nodes["merge"]["rf"][0].size == 5
    shifted = two_branch_graph([("conv", window(3, 1, 1, nd=1))], [("conv", window(3, 1, 0, nd=1)),
                                                                  ("pad", Attrs(padding=((1, 1),)))])
    receptive_field_pass(shifted)
    assert shifted.nodes["merge"]["rf_aligned"] is True  # conv p=0 then pad 1 == conv p=1
    off = two_branch_graph([("conv", window(3, 1, 1, nd=1))], [("conv", window(3, 1, 0, nd=1)),
                                                              ("pad", Attrs(padding=((2, 0),)))])
    receptive_field_pass(off)
    assert off.nodes["merge"]["rf_aligned"] is False
    # hull of [j-1, j+1] and [j-2, j]: 4 pixels, effective padding 2
    assert off.nodes["merge"]["rf"][0] == ReceptiveField(4, Fraction(1), Fraction(2))


def test_unet_pool_then_upsample_is_aligned():
    down_up = two_branch_graph(
        [("max_pool", window(2, 2, nd=1)), ("upsample", Attrs(scale=(2.0,), mode="nearest"))],
        [("pointwise", Attrs())],
    )
    receptive_field_pass(down_up)
    up = down_up.nodes["a1"]["rf"][0]
    # units 2i and 2i+1 both read pixels 2i..2i+1: centres +1/2 and -1/2, on average 0
    assert up.stride == 1 and up.size == 2 and up.period == 2 and up.center_offset == 0
    assert [up.bounds(j) for j in range(4)] == [(0, 1), (0, 1), (2, 3), (2, 3)]
    assert down_up.nodes["merge"]["rf_aligned"] is True
    convt = two_branch_graph(
        [("conv", window(3, 2, 1, nd=1)), ("conv_transpose", Attrs(kernel=(2,), stride=(2,), padding=((0, 0),)))],
        [("conv", window(3, 1, 1, nd=1))],
    )
    receptive_field_pass(convt)
    rf = convt.nodes["a1"]["rf"][0]
    assert rf.stride == 1 and rf.size == 3  # each output reads one input of stride 2
    assert [rf.bounds(j) for j in range(4)] == [(-1, 1), (-1, 1), (1, 3), (1, 3)]


def test_fractional_stride_after_upsampling():
    g = chain([("up", "upsample", Attrs(scale=(2.0,), mode="nearest"))], nd=1, size=16)
    receptive_field_pass(g)
    rf = g.nodes["up"]["rf"][0]
    assert rf.stride == Fraction(1, 2) and rf.size == 1 and rf.period == 2
    bil = chain([("up", "upsample", Attrs(scale=(2.0,), mode="linear"))], nd=1, size=16)
    receptive_field_pass(bil)
    assert bil.nodes["up"]["rf"][0].size == 2  # one extra input tap
    align = chain([("up", "upsample", Attrs(scale=(2.0,), mode="linear", align_corners=True))], nd=1)
    receptive_field_pass(align)
    assert align.nodes["up"]["rf"] == (None,)


# -- the gradient oracle -----------------------------------------------------------------------

torch = pytest.importorskip("torch")



def random_layers(rng):
    """Layer specs: (op, k, s, p, d) plus upsample entries."""
    layers = []
    for _ in range(rng.randint(2, 6)):
        kind = rng.choices(["conv", "max_pool", "avg_pool", "conv_transpose", "upsample"],
                           weights=[4, 2, 2, 1, 1])[0]
        if kind == "conv":
            k = rng.randint(1, 5)
            layers.append(("conv", k, rng.randint(1, 3), rng.randint(0, k // 2 + 1), rng.randint(1, 3)))
        elif kind in ("max_pool", "avg_pool"):
            k = rng.randint(2, 4)
            d = rng.randint(1, 2) if kind == "max_pool" else 1
            layers.append((kind, k, rng.randint(1, k), rng.randint(0, k // 2), d))
        elif kind == "conv_transpose":
            s = rng.randint(1, 3)
            k = s * rng.randint(1, 2) + rng.choice([0, 0, 1])  # mostly k % s == 0
            layers.append(("conv_transpose", k, s, rng.randint(0, (k - 1) // 2), 1))
        else:
            layers.append(("upsample", rng.choice([2, 2, 3]), 0, 0, rng.choice(["nearest", "linear"])))
    return layers


def torch_model(layers):
    nn = torch.nn
    mods = []
    for op, k, s, p, d in layers:
        if op == "conv" or (op == "max_pool" and d > 1):
            m = nn.Conv1d(1, 1, k, s, p, d, bias=False)
        elif op in ("max_pool", "avg_pool"):
            m = nn.AvgPool1d(k, s, p)
        elif op == "conv_transpose":
            m = nn.ConvTranspose1d(1, 1, k, s, p, bias=False)
        else:
            m = nn.Upsample(scale_factor=float(k), mode=d)
        mods.append(m)
    model = nn.Sequential(*mods).double()
    for prm in model.parameters():
        prm.data.fill_(1.0)
    return model


def ir_graph(layers, size):
    g = new_graph("m", None, "torch")
    prev = add_op(g, "x", "input", shapes=[(1, 1, size)])
    for i, (op, k, s, p, d) in enumerate(layers):
        if op == "upsample":
            attrs = Attrs(scale=(float(k),), mode=d)
        else:
            attrs = Attrs(kernel=(k,), stride=(s,), dilation=(d,), padding=((p, p),))
        prev = add_op(g, f"l{i}", op, inputs=[prev], attrs=attrs)
    return g, prev


def gradient_extent(model, size, unit):
    x = torch.zeros(1, 1, size, dtype=torch.float64, requires_grad=True)
    y = model(x)
    y[0, 0, unit].backward()
    nonzero = torch.nonzero(x.grad[0, 0]).flatten()
    return int(nonzero.min()), int(nonzero.max())


def test_gradient_oracle_random_cnns():
    rng = random.Random(1234)
    checked = periodic = 0
    size = 400
    while checked < 30:
        layers = random_layers(rng)
        model = torch_model(layers)
        try:
            with torch.no_grad():
                out = model(torch.zeros(1, 1, size, dtype=torch.float64)).shape[-1]
        except RuntimeError:
            continue
        g, last = ir_graph(layers, size)
        receptive_field_pass(g)
        rf = g.nodes[last]["rf"][0]
        centre = out // 2
        units = range(centre, centre + rf.period)
        spans = [rf.bounds(j) for j in units]
        if out < 8 or any(s is None or s[0] < 0 or s[1] >= size for s in spans):
            continue  # the field must sit inside the input for the oracle to see all of it
        extents = []
        for j, predicted in zip(units, spans):
            actual = gradient_extent(model, size, j)
            assert actual == predicted, (layers, j, actual, predicted)
            extents.append(actual[1] - actual[0] + 1)
        assert max(extents) == rf.size, (layers, extents, rf)
        checked += 1
        periodic += rf.period > 1
    assert periodic >= 5  # the phase-dependent cases were exercised


def test_gradient_oracle_2d_merge():
    """Two branches added: the merged field is the hull of both, on each axis."""
    nn = torch.nn
    a = nn.Conv2d(1, 1, (3, 5), (1, 1), (1, 0), bias=False).double()
    b = nn.Conv2d(1, 1, (5, 1), (1, 1), (2, -0 + 0), bias=False).double()
    for m in (a, b):
        m.weight.data.fill_(1.0)
    x = torch.zeros(1, 1, 40, 44, dtype=torch.float64, requires_grad=True)
    ya, yb = a(x), b(x)
    yb = yb[:, :, :, 2:-2]  # crop the wider branch to the same width
    (ya + yb)[0, 0, 20, 20].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    g = new_graph("m", None, "torch")
    add_op(g, "x", "input", shapes=[(1, 1, 40, 44)])
    add_op(g, "a", "conv", inputs=["x"], attrs=Attrs(kernel=(3, 5), stride=(1, 1), padding=((1, 1), (0, 0))))
    add_op(g, "b", "conv", inputs=["x"], attrs=Attrs(kernel=(5, 1), stride=(1, 1), padding=((2, 2), (0, 0))))
    add_op(g, "crop", "slice", inputs=["b"], attrs=Attrs(slices=((None, None, 1), (2, -2, 1))))
    add_op(g, "sum", "add", inputs=["a", "crop"])
    receptive_field_pass(g)
    rf_h, rf_w = g.nodes["sum"]["rf"]
    assert rf_h.bounds(20) == (int(rows.min()), int(rows.max()))
    assert rf_w.bounds(20) == (int(cols.min()), int(cols.max()))
    assert g.nodes["sum"]["rf_aligned"] is True


def test_huge_kernels_after_upsampling_are_fast():
    import time

    g = chain([("up", "upsample", Attrs(scale=(2.0,), mode="nearest")),
               ("conv", "conv", window(10**12, 1, 0, nd=1)),
               ("convt", "conv_transpose", window(10**12, 2, 0, nd=1)),
               ("up8", "upsample", Attrs(scale=(1e9,), mode="nearest"))], nd=1, size=16)
    start = time.perf_counter()
    receptive_field_pass(g)
    assert time.perf_counter() - start < 1.0
    rf = g.nodes["conv"]["rf"][0]
    # unit j reads upsampled pixels j .. j + 1e12 - 1, i.e. inputs j//2 .. (j + 1e12 - 1)//2
    assert rf.bounds(0) == (0, 5 * 10**11 - 1) and rf.bounds(1) == (0, 5 * 10**11)
    assert rf.size == 5 * 10**11 + 1
    assert g.nodes["convt"]["rf"] == (None,) and g.nodes["up8"]["rf"] == (None,)
