"""Edge cases of the pitfall rules (AL2xx) and the model-level size facts (AL3xx).

The unit tests build small IR graphs by hand; every shape in them comes from PyTorch itself (the
layer is run on meta tensors), so a graph can never claim a size PyTorch would not produce.
The fixture files are checked by tests/test_rule_fixtures.py; the zoo checks at the end run the
real pipeline on the reference architectures.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from archlint.graph import Attrs, Location, add_op, new_graph  # noqa: E402
from archlint.rule import RuleContext  # noqa: E402
from archlint_rules.avgpool_count_include_pad import (  # noqa: E402
    avgpool_count_include_pad,
    first_window_share,
)
from archlint_rules.conv_bias_before_norm import conv_bias_before_norm  # noqa: E402
from archlint_rules.dilation_padding_mismatch import dilation_padding_mismatch  # noqa: E402
from archlint_rules.even_kernel_same_padding import (  # noqa: E402
    even_kernel_same_padding,
    size_change,
)
from archlint_rules._topology import read_fraction  # noqa: E402
from archlint_rules.kernel_smaller_than_stride import kernel_smaller_than_stride  # noqa: E402
from archlint_rules.large_dense_head import large_dense_head, layer_params  # noqa: E402
from archlint_rules.pool_drops_border import dropped_trailing, pool_drops_border  # noqa: E402
from archlint_rules.spatial_collapse import collapsed_axes, spatial_collapse  # noqa: E402
from archlint_rules.transposed_conv_output_ambiguity import (  # noqa: E402
    transposed_conv_output_ambiguity,
)


# -- a tiny graph builder whose shapes come from PyTorch -------------------------------------


class Net:
    """Builds an IR graph op by op; each op's output shape is what PyTorch computes on meta
    tensors (and an op PyTorch rejects gets ``error`` set, as the torch frontend does)."""

    def __init__(self, shape=(1, 8, 32, 32), frontend="torch"):
        self.g = new_graph("net", "net.py", frontend)
        self.g.graph["input_shapes"] = [tuple(shape)]
        self.line = 0
        self.tensors = {}
        self._add("x", "input", [], Attrs(), torch.empty(shape, device="meta"))

    def _add(self, name, op, inputs, attrs, value, origin="", error=None):
        self.line += 1
        shapes = None if value is None else (tuple(value.shape),)
        add_op(self.g, name, op, inputs=inputs, attrs=attrs, shapes=shapes,
               location=Location("net.py", self.line, name), origin=origin, error=error)
        self.tensors[name] = value
        return name

    def _run(self, name, op, inputs, attrs, fn, origin=""):
        values = [self.tensors[i] for i in inputs]
        if any(v is None for v in values):
            return self._add(name, op, inputs, attrs, None, origin)
        try:
            value = fn(*values)
        except RuntimeError as exc:
            return self._add(name, op, inputs, attrs, None, origin, error=str(exc).splitlines()[0])
        return self._add(name, op, inputs, attrs, value, origin)

    def conv(self, name, src, cout, k, s=1, p=0, d=1, bias=True, groups=1, pads=None):
        """pads: explicit (begin, end) per axis (asymmetric, applied with F.pad first)."""
        cin = self.tensors[src].shape[1] if self.tensors[src] is not None else None
        pairs = pads or ((p, p), (p, p))
        attrs = Attrs(kernel=(k, k), stride=(s, s), dilation=(d, d), padding=pairs, groups=groups,
                      in_channels=cin, out_channels=cout, bias=bias)
        weight = torch.empty(cout, (cin or 1) // groups, k, k, device="meta")

        def fn(x):
            (hb, he), (wb, we) = pairs
            return F.conv2d(F.pad(x, (wb, we, hb, he)), weight, stride=s, dilation=d, groups=groups)

        return self._run(name, "conv", [src], attrs, fn, "nn.Conv2d")

    def conv_t(self, name, src, cout, k, s, p=0, op=0):
        cin = self.tensors[src].shape[1]
        attrs = Attrs(kernel=(k, k), stride=(s, s), dilation=(1, 1), padding=((p, p), (p, p)),
                      output_padding=(op, op), in_channels=cin, out_channels=cout, bias=True)
        weight = torch.empty(cin, cout, k, k, device="meta")
        return self._run(name, "conv_transpose", [src], attrs,
                         lambda x: F.conv_transpose2d(x, weight, stride=s, padding=p, output_padding=op),
                         "nn.ConvTranspose2d")

    def pool(self, name, src, k, s, p=0, kind="max", ceil=False, include_pad=True):
        attrs = Attrs(kernel=(k, k), stride=(s, s), dilation=(1, 1), padding=((p, p), (p, p)),
                      ceil_mode=ceil, count_include_pad=include_pad)
        if kind == "max":
            fn = lambda x: F.max_pool2d(x, k, s, p, ceil_mode=ceil)  # noqa: E731
        else:
            fn = lambda x: F.avg_pool2d(x, k, s, p, ceil_mode=ceil, count_include_pad=include_pad)  # noqa: E731
        return self._run(name, f"{kind}_pool", [src], attrs, fn, f"nn.{kind.title()}Pool2d")

    def relu(self, name, src):
        return self._run(name, "pointwise", [src], Attrs(), F.relu, "relu")

    def bn(self, name, src):
        return self._run(name, "norm", [src], Attrs(), lambda x: x, "nn.BatchNorm2d")

    def add(self, name, a, b):
        return self._run(name, "add", [a, b], Attrs(), lambda x, y: x + y, "operator.add")

    def cat(self, name, *srcs):
        return self._run(name, "concat", list(srcs), Attrs(axis=1),
                         lambda *xs: torch.cat(xs, 1), "torch.cat")

    def crop(self, name, src, rows, cols):
        """x[:, :, rows[0]:rows[1], cols[0]:cols[1]]"""
        attrs = Attrs(slices=((rows[0], rows[1], 1), (cols[0], cols[1], 1)))
        return self._run(name, "slice", [src], attrs,
                         lambda x: x[:, :, rows[0]:rows[1], cols[0]:cols[1]], "operator.getitem")

    def upsample(self, name, src, factor, mode="nearest"):
        attrs = Attrs(scale=(float(factor),) * 2, mode=mode, align_corners=None if mode == "nearest" else False)
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        return self._run(name, "upsample", [src], attrs,
                         lambda x: F.interpolate(x, scale_factor=factor, mode=mode, **kwargs),
                         "F.interpolate")

    def global_pool(self, name, src):
        return self._run(name, "global_pool", [src], Attrs(mode="average"),
                         lambda x: x.mean((2, 3), keepdim=True), "nn.AdaptiveAvgPool2d")

    def mul(self, name, a, b):
        return self._run(name, "mul", [a, b], Attrs(), lambda x, y: x * y, "operator.mul")

    def flatten(self, name, src):
        return self._run(name, "flatten", [src], Attrs(axis=1, end_axis=-1),
                         lambda x: x.flatten(1), "nn.Flatten")

    def linear(self, name, src, out):
        cin = self.tensors[src].shape[1]
        weight = torch.empty(out, cin, device="meta")
        return self._run(name, "linear", [src], Attrs(in_features=cin, out_features=out, bias=True),
                         lambda x: F.linear(x, weight), "nn.Linear")


def run(rule, g, passes=False):
    if passes:
        from archlint.passes import run_passes

        run_passes(g, sizes_range=(1, 512))
    ctx = RuleContext(graph=g, frontend=g.graph["frontend"], target="net.py")
    ctx.rule = rule
    return list(rule.check(ctx))


def run_passes_only(g):
    from archlint.passes import run_passes

    run_passes(g, sizes_range=(1, 512))


def at(findings):
    return sorted(f.location.node for f in findings)


# -- dilation-padding-mismatch (AL201) --------------------------------------------------------


def test_dilated_conv_among_same_padded_convs_reports_exact_shrink():
    n = Net()
    n.conv("c1", "x", 8, 3, p=1)
    n.conv("c2", "c1", 8, 3, p=1, d=2)
    n.conv("c3", "c2", 8, 3, p=1)
    (f,) = run(dilation_padding_mismatch, n.g)
    assert f.location.node == "c2"
    assert "shrinks the map by 2 pixels per axis" in f.message and "32x32 -> 30x30" in f.message
    assert "padding=2" in f.fix


@pytest.mark.parametrize("d,p,shrink", [(3, 1, 4), (4, 2, 4), (2, 0, 4)])
def test_dilation_shrink_is_d_times_k_minus_1_minus_padding(d, p, shrink):
    n = Net()
    n.conv("c1", "x", 8, 3, p=1)
    n.conv("c2", "c1", 8, 3, p=p, d=d)
    (f,) = run(dilation_padding_mismatch, n.g)
    out = 32 - shrink
    assert f"32x32 -> {out}x{out}" in f.message
    assert f"padding={d}" in f.fix


def test_dilated_conv_with_matching_padding_is_quiet():
    n = Net()
    n.conv("c1", "x", 8, 3, p=1)
    n.conv("c2", "c1", 8, 3, p=4, d=4)
    n.conv("c3", "c2", 8, 3, p=1)
    assert run(dilation_padding_mismatch, n.g) == []


def test_dilated_conv_in_a_valid_stack_is_quiet():
    # Every conv shrinks on purpose: nothing next to it keeps the size.
    n = Net()
    n.conv("c1", "x", 8, 3)
    n.conv("c2", "c1", 8, 3, d=2)
    n.conv("c3", "c2", 8, 3)
    assert run(dilation_padding_mismatch, n.g) == []


def test_dilated_branch_merged_with_input_size_branch_fires():
    n = Net()
    n.conv("a", "x", 8, 1)
    n.conv("b", "x", 8, 3, p=1, d=3)
    n.relu("b_act", "b")
    n.cat("merge", "a", "b_act")
    assert n.g.nodes["merge"]["error"] is not None  # PyTorch rejects 32 vs 28
    (f,) = run(dilation_padding_mismatch, n.g)
    assert f.location.node == "b" and "merge" in f.message
    assert "padding=3" in f.fix


# -- kernel-smaller-than-stride (AL203) -------------------------------------------------------


@pytest.mark.parametrize(
    "k,s,d,share",
    [(1, 2, 1, Fraction(1, 2)), (2, 2, 1, 1), (1, 3, 1, Fraction(1, 3)), (2, 3, 1, Fraction(2, 3)),
     (2, 2, 2, Fraction(1, 2)), (2, 2, 3, 1), (3, 2, 1, 1)],
)
def test_read_fraction_matches_pixels_pytorch_reads(k, s, d, share):
    # Count the input rows whose gradient is nonzero in a long 1-D conv (steady state).
    x = torch.zeros(1, 1, 120, requires_grad=True)
    F.conv1d(x, torch.ones(1, 1, k), stride=s, dilation=d).sum().backward()
    read = int((x.grad[0, 0, 12:108] != 0).sum())  # away from both borders
    assert Fraction(read, 96) == share == read_fraction(k, s, d)


def test_strided_1x1_conv_warns_with_fraction_skipped():
    n = Net()
    n.conv("down", "x", 16, 1, s=2)
    n.conv("c", "down", 16, 3, p=1)
    (f,) = run(kernel_smaller_than_stride, n.g)
    assert f.severity == "warning" and "75%" in f.message
    assert "kernel_size=3, stride=2, padding=1" in f.fix


def test_projection_shortcut_is_info():
    n = Net()
    n.conv("conv1", "x", 16, 3, s=2, p=1)
    n.bn("bn1", "conv1")
    n.conv("proj", "x", 16, 1, s=2)
    n.bn("proj_bn", "proj")
    n.add("sum", "bn1", "proj_bn")
    (f,) = run(kernel_smaller_than_stride, n.g)
    assert f.location.node == "proj" and f.severity == "info"
    assert "the other branch reads them (conv1)" in f.message


def test_resnet_v1_bottleneck_downsampling_is_info_and_says_no_branch_reads():
    n = Net()
    n.conv("conv1", "x", 16, 1, s=2)  # v1: the stride on the first 1x1 of the main branch
    n.relu("act", "conv1")
    n.conv("conv2", "act", 16, 3, p=1)
    n.conv("proj", "x", 16, 1, s=2)
    n.add("sum", "conv2", "proj")
    found = run(kernel_smaller_than_stride, n.g)
    assert at(found) == ["conv1", "proj"]
    assert all(f.severity == "info" and "no branch of the block reads them" in f.message for f in found)


def test_strided_1x1_conv_feeding_a_concat_still_warns():
    n = Net()
    n.conv("a", "x", 16, 3, s=2, p=1)
    n.conv("b", "x", 16, 1, s=2)
    n.cat("merge", "a", "b")
    (f,) = run(kernel_smaller_than_stride, n.g)
    assert f.location.node == "b" and f.severity == "warning"


def test_pool_with_window_equal_to_stride_is_quiet():
    n = Net()
    n.pool("p", "x", 2, 2)
    n.pool("q", "p", 3, 2, p=1)
    assert run(kernel_smaller_than_stride, n.g) == []


# -- spatial-collapse (AL204) -----------------------------------------------------------------


def test_window_larger_than_padded_input_is_reported_once():
    n = Net((1, 8, 8, 8))
    n.pool("p1", "x", 2, 2)
    n.pool("p2", "p1", 2, 2)
    n.pool("p3", "p2", 2, 2)
    n.conv("head", "p3", 8, 3)  # 1x1 map, 3x3 window
    n.relu("act", "head")
    assert n.g.nodes["head"]["error"] is not None
    (f,) = run(spatial_collapse, n.g)
    assert f.location.node == "head" and f.severity == "error"
    assert "3x3" in f.message and "1x1 map" in f.message
    assert collapsed_axes(n.g, "head") == [(0, 1, 3), (1, 1, 3)]


def test_ceil_mode_pool_on_tiny_map_is_not_a_collapse():
    n = Net((1, 8, 1, 1))
    n.pool("p", "x", 2, 2, ceil=True)  # PyTorch gives 1x1
    assert n.g.nodes["p"]["error"] is None
    assert run(spatial_collapse, n.g) == []


def test_padding_that_makes_the_window_fit_is_quiet():
    n = Net((1, 8, 1, 1))
    n.conv("c", "x", 8, 3, p=1)
    assert run(spatial_collapse, n.g) == []


def test_merge_failure_is_not_a_collapse():
    n = Net()
    n.conv("a", "x", 8, 3)
    n.add("sum", "a", "x")
    assert n.g.nodes["sum"]["error"] is not None
    assert run(spatial_collapse, n.g) == []


# -- even-kernel-same-padding (AL205) ---------------------------------------------------------


@pytest.mark.parametrize("k,p", [(2, 1), (4, 2), (4, 1), (6, 3), (6, 2)])
def test_size_change_matches_pytorch(k, p):
    out = F.conv2d(torch.empty(1, 1, 32, 32, device="meta"), torch.empty(1, 1, k, k, device="meta"),
                   padding=p).shape[-1]
    assert size_change(k, 1, p, p) == out - 32


def test_even_kernel_growing_the_map_fires():
    n = Net()
    n.conv("c", "x", 8, 4, p=2)
    (f,) = run(even_kernel_same_padding, n.g)
    assert "32x32 -> 33x33" in f.message and "grows" in f.message
    assert "kernel_size=5, padding=2" in f.fix and "F.pad(x, (1, 2, 1, 2))" in f.fix


def test_even_kernel_shrinking_among_same_convs_fires():
    n = Net()
    n.conv("c1", "x", 8, 3, p=1)
    n.conv("c2", "c1", 8, 4, p=1)
    (f,) = run(even_kernel_same_padding, n.g)
    assert f.location.node == "c2" and "32x32 -> 31x31" in f.message and "c1" in f.message
    assert "kernel_size=3, padding=1" in f.fix


def test_patchgan_style_shrinking_head_is_quiet():
    n = Net()
    n.conv("c1", "x", 8, 4, s=2, p=1)
    n.conv("c2", "c1", 8, 4, p=1)
    n.conv("c3", "c2", 1, 4, p=1)
    assert run(even_kernel_same_padding, n.g) == []


def test_asymmetric_same_padding_is_quiet():
    n = Net()
    n.conv("c", "x", 8, 4, pads=((1, 2), (1, 2)))
    assert n.g.nodes["c"]["shapes"][0][2:] == (32, 32)
    assert run(even_kernel_same_padding, n.g) == []


def test_transposed_conv_is_not_checked():
    n = Net()
    n.conv_t("up", "x", 8, 4, 2, p=1)
    assert run(even_kernel_same_padding, n.g) == []


# -- pool-drops-border (AL206) ----------------------------------------------------------------


@pytest.mark.parametrize("n_in,k,s,p", [(7, 2, 2, 0), (64, 3, 2, 0), (10, 3, 3, 0), (9, 3, 2, 1),
                                         (112, 3, 2, 1), (13, 5, 4, 2)])
def test_dropped_trailing_matches_pixels_pytorch_pools(n_in, k, s, p):
    x = torch.ones(1, 1, n_in, requires_grad=True)
    F.avg_pool1d(x, k, s, p).sum().backward()
    visited = torch.nonzero(x.grad[0, 0]).max().item() + 1
    assert dropped_trailing(n_in, k, s, 1, p, p) == n_in - visited


def test_pool_drops_border_counts_rows():
    n = Net((1, 8, 64, 64))
    n.pool("p", "x", 3, 2)
    (f,) = run(pool_drops_border, n.g, passes=True)
    assert f.severity == "info" and "never visits the last row and the last column" in f.message
    assert f.sizes == "every row and column is pooled at input sides n >= 3 with n % 2 == 1"


def test_pool_drops_border_sizes_are_the_pools_own_not_the_models():
    """A flatten locks the model to 63..64; the pool still tiles its map at every odd side."""
    n = Net((1, 8, 64, 64))
    n.pool("p", "x", 3, 2)
    n.flatten("flat", "p")
    n.linear("fc", "flat", 10)
    (f,) = run(pool_drops_border, n.g, passes=True)
    assert n.g.graph["sizes"].describe(n.g.graph["sizes"].admissible) == "63..64 only"
    assert f.sizes == "every row and column is pooled at input sides n >= 3 with n % 2 == 1"


def test_ceil_mode_and_tiling_pools_are_quiet():
    n = Net((1, 8, 64, 64))
    n.pool("p", "x", 3, 2, ceil=True)
    n.pool("q", "p", 2, 2)
    assert run(pool_drops_border, n.g) == []


# -- avgpool-count-include-pad (AL207) --------------------------------------------------------


@pytest.mark.parametrize("k,p", [(3, 1), (5, 2), (2, 1)])
def test_corner_share_matches_pytorch(k, p):
    out = F.avg_pool2d(torch.ones(1, 1, 16, 16), k, 1, p, count_include_pad=True)
    corner = first_window_share(16, k, p) ** 2
    assert out[0, 0, 0, 0].item() == pytest.approx(float(corner))


def test_padded_avgpool_reports_corner_attenuation():
    n = Net()
    n.pool("p", "x", 3, 1, p=1, kind="avg")
    (f,) = run(avgpool_count_include_pad, n.g)
    assert "4 real pixels over 9" in f.message and "count_include_pad=False" in f.fix


def test_avgpool_without_padding_or_counting_pad_is_quiet():
    n = Net()
    n.pool("p", "x", 3, 1, p=1, kind="avg", include_pad=False)
    n.pool("q", "p", 2, 2, kind="avg")
    assert run(avgpool_count_include_pad, n.g) == []


# -- transposed-conv-output-ambiguity (AL208) -------------------------------------------------


def test_transposed_conv_missing_odd_skip_fires():
    n = Net((1, 8, 50, 50))
    n.conv("enc", "x", 8, 3, p=1)
    n.pool("down", "enc", 2, 2, ceil=True)  # 25
    n.pool("down2", "down", 2, 2)  # 12
    n.conv_t("up", "down2", 8, 2, 2)  # 24
    n.cat("merge", "up", "down")
    (f,) = run(transposed_conv_output_ambiguity, n.g, passes=True)
    assert f.location.node == "up" and "24x24" in f.message and "25x25" in f.message
    assert "output_padding=1" in f.fix and "output_size=skip.shape[2:]" in f.fix
    # skip = ceil(n/2) is missed exactly when it is odd: n % 4 in {1, 2}
    assert f.sizes == "misses the skip at input sides n >= 5 with n % 4 in {1, 2}"


def test_transposed_conv_with_output_padding_is_quiet():
    n = Net((1, 8, 50, 50))
    n.pool("down", "x", 2, 2, ceil=True)  # 25
    n.pool("down2", "down", 2, 2)  # 12
    n.conv_t("up", "down2", 8, 2, 2, op=1)  # 25
    n.cat("merge", "up", "down")
    assert n.g.nodes["merge"]["error"] is None
    assert run(transposed_conv_output_ambiguity, n.g) == []


def test_transposed_conv_gap_larger_than_stride_is_not_this_rule():
    n = Net((1, 8, 50, 50))
    n.pool("down2", "x", 4, 4)  # 12
    n.conv_t("up", "down2", 8, 2, 2)  # 24
    n.cat("merge", "up", "x")  # 50: no output_padding closes 26
    assert run(transposed_conv_output_ambiguity, n.g) == []


# -- conv-bias-before-norm (AL209) ------------------------------------------------------------


def test_conv_bias_before_batchnorm_is_info():
    n = Net()
    n.conv("c", "x", 8, 3, p=1, bias=True)
    n.bn("bn", "c")
    n.conv("c2", "bn", 8, 3, p=1, bias=False)
    n.bn("bn2", "c2")
    (f,) = run(conv_bias_before_norm, n.g)
    assert f.location.node == "c" and f.severity == "info" and "bias=False" in f.fix


def test_conv_bias_used_elsewhere_is_quiet():
    n = Net()
    n.conv("c", "x", 8, 3, p=1, bias=True)
    n.bn("bn", "c")
    n.add("sum", "bn", "c")  # the raw conv output (bias included) is used too
    assert run(conv_bias_before_norm, n.g) == []


# -- large-dense-head (AL210) -----------------------------------------------------------------


def test_layer_params_match_pytorch():
    conv = torch.nn.Conv2d(32, 64, 3, groups=4)
    linear = torch.nn.Linear(100, 7, bias=False)
    n = Net((1, 32, 8, 8))
    n.conv("c", "x", 64, 3, groups=4)
    n.flatten("f", "c")
    n.g.nodes["f"]["shapes"] = ((1, 100),)
    add_op(n.g, "fc", "linear", inputs=["f"], attrs=Attrs(in_features=100, out_features=7, bias=False))
    assert layer_params(n.g.nodes["c"]) == sum(p.numel() for p in conv.parameters())
    assert layer_params(n.g.nodes["fc"]) == sum(p.numel() for p in linear.parameters())


def test_dominant_dense_head_fires_with_counts():
    n = Net((1, 3, 32, 32))
    n.conv("c", "x", 64, 3, p=1)
    n.flatten("flat", "c")
    n.linear("fc", "flat", 16)  # 65536*16 + 16 = 1,048,592
    n.linear("out", "fc", 10)
    (f,) = run(large_dense_head, n.g)
    assert f.location.node == "fc"
    assert "Linear(65536, 16)" in f.message and "1,048,592 of the model's 1,050,554" in f.message
    assert "(99.8%)" in f.message
    assert "nn.Linear(64, 16)" in f.fix


def test_small_or_minor_dense_heads_are_quiet():
    n = Net((1, 3, 8, 8))
    n.conv("c", "x", 64, 3, p=1)
    n.flatten("flat", "c")
    n.linear("fc", "flat", 10)  # 40970 parameters: dominant but small
    assert run(large_dense_head, n.g) == []


def test_pool_rounding_on_indivisible_size_is_left_to_odd_size_stride2():
    n = Net((1, 8, 7, 7))
    n.pool("p", "x", 2, 2)  # drops row 6, but 7 % 2 != 0: odd-size-stride2 reports it
    assert run(pool_drops_border, n.g) == []


# -- misaligned-merge (AL202): on the real receptive-field pass -------------------------------

from archlint_rules.misaligned_merge import max_offset, misaligned_merge, offset_at  # noqa: E402


def _valid_unet_level(crop_rows, crop_cols):
    n = Net((1, 3, 64, 64))
    n.conv("enc", "x", 8, 3, p=1)
    n.pool("down", "enc", 2, 2)
    n.conv("mid1", "down", 8, 3)
    n.conv("mid2", "mid1", 8, 3)
    n.conv_t("up", "mid2", 8, 2, 2)  # 56x56
    n.crop("skip", "enc", crop_rows, crop_cols)
    n.cat("merge", "skip", "up")
    return n


def test_corner_cropped_skip_is_misaligned_with_offsets_and_centre_crop_fix():
    n = _valid_unet_level((0, 56), (0, 56))
    (f,) = run(misaligned_merge, n.g, passes=True)
    assert f.location.node == "merge" and f.severity == "warning"
    # pixel pairs of the 2x2/2 transposed conv sit 3.5 and 4.5 px off: 4 px on average
    assert "up at i + 4" in f.message and ", 4 px apart" in f.message
    assert "[..., 4:60, 4:60]" in f.fix


def test_centre_cropped_skip_is_quiet_despite_the_half_pixel_phase():
    n = _valid_unet_level((4, 60), (4, 60))
    assert run(misaligned_merge, n.g, passes=True) == []
    assert n.g.nodes["merge"]["rf_aligned"] is True  # equal centres, averaged over the phase


def test_one_pixel_shift_between_stride_1_branches_fires():
    n = Net((1, 3, 32, 32))
    n.conv("a", "x", 8, 3, p=1)
    n.conv("b", "x", 8, 3, pads=((2, 0), (1, 1)))  # shifted down one row, same size
    n.add("sum", "a", "b")
    (f,) = run(misaligned_merge, n.g, passes=True)
    assert "H:" in f.message and ", 1 px apart" in f.message and "W" not in f.message.split("(")[1][:3]


def test_projection_shortcut_and_se_gate_are_aligned():
    n = Net((1, 8, 32, 32))
    n.conv("c1", "x", 16, 3, s=2, p=1)
    n.conv("c2", "c1", 16, 3, p=1)
    n.global_pool("squeeze", "c2")
    n.conv("excite", "squeeze", 16, 1)
    n.mul("gated", "c2", "excite")
    n.conv("proj", "x", 16, 1, s=2)
    n.add("sum", "gated", "proj")
    assert run(misaligned_merge, n.g, passes=True) == []
    assert n.g.nodes["sum"]["rf_aligned"] is True


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_fpn_top_down_upsampling_phase_is_quiet(mode):
    n = Net((1, 3, 64, 64))
    n.conv("c2", "x", 8, 3, s=2, p=1)
    n.conv("c3", "c2", 8, 3, s=2, p=1)
    n.upsample("up", "c3", 2, mode)
    n.conv("lateral", "c2", 8, 1)
    n.add("p2", "lateral", "up")
    assert run(misaligned_merge, n.g, passes=True) == []


def _true_row_centres(model, side, units):
    """The oracle: with positive weights the gradient of output row u is positive exactly on
    the input rows it reads, weighted by how much it reads them; its mean is the true centre."""
    centres = []
    for u in units:
        x = torch.zeros(1, 1, side, side, dtype=torch.float64, requires_grad=True)
        model(x)[0, 0, u, side // 2].backward()
        weight = x.grad[0, 0].sum(1)
        rows = torch.arange(side, dtype=torch.float64)
        centres.append(float((weight * rows).sum() / weight.sum()))
    return centres


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_stride2_conv_then_x2_upsample_is_half_a_pixel_off_and_quiet(mode):
    """A 3x3/s2/p1 conv, a x2 upsample, concatenated with the 56x56 map it came from (the FPN and
    DeepLabv3+ decoder pattern): the upsampled pixel i sits 0.5 px before the skip's pixel i on
    average (bilinear: exactly 0.5 px at every pixel), which is sub-pixel and not reported."""
    nn = torch.nn
    down = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False).double()
    down.weight.data.fill_(1.0)
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    model = nn.Sequential(down, nn.Upsample(scale_factor=2, mode=mode, **kwargs))
    side = 56
    units = range(20, 28)  # interior: no border clamping
    true_offsets = [c - u for c, u in zip(_true_row_centres(model, side, units), units)]
    if mode == "bilinear":
        assert true_offsets == pytest.approx([-0.5] * len(units), abs=1e-12)
    else:
        assert true_offsets == pytest.approx([0.0, -1.0] * (len(units) // 2), abs=1e-12)

    n = Net((1, 1, side, side))
    n.conv("down", "x", 1, 3, s=2, p=1)
    n.upsample("up", "down", 2, mode)
    n.cat("merge", "x", "up")
    run_passes_only(n.g)
    rf_skip, rf_up = n.g.nodes["x"]["rf"][0], n.g.nodes["up"]["rf"][0]
    assert offset_at(rf_skip, rf_up, 20) == Fraction(-1, 2)
    assert offset_at(rf_skip, rf_up, 20) == pytest.approx(sum(true_offsets) / len(true_offsets), abs=1e-12)
    assert run(misaligned_merge, n.g, passes=True) == []


def test_a_whole_pixel_shift_on_the_upsampled_branch_is_measured_exactly():
    """The oracle agrees with the rule's offset when a real shift is added after the upsample:
    a 5x5 conv padded (4, 0) rows moves the map 2 rows down, 2.5 px from the skip in all."""
    nn = torch.nn
    down = nn.Conv2d(1, 1, 3, stride=2, padding=1, bias=False).double()
    shift = nn.Conv2d(1, 1, 5, bias=False).double()
    for m in (down, shift):
        m.weight.data.fill_(1.0)
    model = nn.Sequential(down, nn.Upsample(scale_factor=2), nn.ZeroPad2d((2, 2, 4, 0)), shift)
    side = 64
    units = range(24, 32)
    true_offsets = [c - u for c, u in zip(_true_row_centres(model, side, units), units)]
    n = Net((1, 1, side, side))
    n.conv("down", "x", 1, 3, s=2, p=1)
    n.upsample("up", "down", 2)
    n.conv("shift", "up", 1, 5, pads=((4, 0), (2, 2)))
    n.cat("merge", "x", "shift")
    (f,) = run(misaligned_merge, n.g, passes=True)
    rf_skip, rf_shift = n.g.nodes["x"]["rf"][0], n.g.nodes["shift"]["rf"][0]
    assert offset_at(rf_skip, rf_shift, 24) == Fraction(-5, 2)
    assert float(offset_at(rf_skip, rf_shift, 24)) == pytest.approx(sum(true_offsets) / len(true_offsets))
    assert "H: x at i + 0, shift at i - 2.5, 2.5 px apart" in f.message


def test_max_offset_costs_the_same_at_any_map_size():
    """The centres are affine in the unit index, so the largest gap is at an end of the map:
    a 2**40-wide map costs what a 64-wide one does (it used to loop over every column)."""
    import time

    n = Net((1, 3, 64, 64))
    n.conv("down", "x", 16, 3, s=2, p=1)
    n.conv_t("up", "down", 8, 4, 2, p=1)
    n.conv("skip", "x", 8, 1)
    n.cat("merge", "skip", "up")
    run_passes_only(n.g)
    rf_skip, rf_up = n.g.nodes["skip"]["rf"][0], n.g.nodes["up"]["rf"][0]
    assert rf_up.period == 2
    start = time.perf_counter()
    huge = max_offset(rf_skip, rf_up, 2**40)
    assert time.perf_counter() - start < 0.05
    assert huge == max_offset(rf_skip, rf_up, 64) == abs(rf_up.center_offset - rf_skip.center_offset)
    # different strides drift: the gap grows to the far end, computed exactly
    rf_down = n.g.nodes["down"]["rf"][0]
    far = (rf_down.stride - rf_skip.stride) * (2**40 - 1) + rf_down.center_offset - rf_skip.center_offset
    assert max_offset(rf_skip, rf_down, 2**40) == abs(far)
    brute = max(abs(offset_at(rf_skip, rf_down, j)) for j in range(50))
    assert max_offset(rf_skip, rf_down, 50) == brute


# -- receptive-field-coverage (AL211), input-size-constraints (AL301), sizes in AL204 ----------

from archlint_rules.input_size_constraints import input_size_constraints  # noqa: E402
from archlint_rules.receptive_field_coverage import receptive_field_coverage  # noqa: E402


def _classifier(side, convs):
    n = Net((1, 3, side, side))
    src = "x"
    for i, (k, stride) in enumerate(convs):
        src = n.conv(f"c{i}", src, 8, k, s=stride, p=k // 2)
    n.relu("act", src)
    n.global_pool("gap", "act")
    n.flatten("flat", "gap")
    n.linear("fc", "flat", 10)
    return n


def test_shallow_classifier_reports_its_receptive_field_share():
    n = _classifier(100, [(3, 1), (5, 1)])
    (f,) = run(receptive_field_coverage, n.g, passes=True)
    assert f.location.node == "c1" and f.severity == "info"
    assert "(c1, 100x100) sees at most 7x7 input pixels: 7% x 7% of the 100x100 input" in f.message


def test_receptive_field_share_per_input_size():
    assert "7% x 7%" in run(receptive_field_coverage, _classifier(100, [(3, 2), (3, 2)]).g, passes=True)[0].message
    (partial,) = run(receptive_field_coverage, _classifier(8, [(3, 2), (3, 2)]).g, passes=True)
    assert "7x7 input pixels: 88% x 88% of the 8x8 input" in partial.message  # 3 + 2*2 = 7
    assert run(receptive_field_coverage, _classifier(7, [(3, 2), (3, 2)]).g, passes=True) == []


def test_dense_prediction_output_is_not_reported():
    n = Net((1, 3, 100, 100))
    n.conv("c1", "x", 8, 3, p=1)
    n.conv("c2", "c1", 8, 3, p=1)
    assert run(receptive_field_coverage, n.g, passes=True) == []


def _residual_pyramid(side):
    n = Net((1, 3, side, side))
    n.conv("enc1", "x", 8, 3, s=2, p=1)
    n.conv("enc2", "enc1", 8, 3, s=2, p=1)
    n.upsample("up", "enc2", 2)
    n.add("sum", "up", "enc1")
    return n


def test_input_size_constraints_summarise_the_sweep_once():
    n = _residual_pyramid(64)
    (f,) = run(input_size_constraints, n.g, passes=True)
    assert f.location.node == "x" and f.severity == "info"
    assert "fine at 64x64" in f.message and "n % 4 in {0, 3}" in f.message
    # 65 is the nearest failing side: 65 -> 33 -> 17 -> 34 vs 33, as PyTorch computes
    assert "65x65 fails first at sum" in f.message and "34x34 vs 33x33" in f.message
    x = torch.empty(1, 3, 65, 65, device="meta")
    e1 = F.conv2d(x, torch.empty(8, 3, 3, 3, device="meta"), stride=2, padding=1)
    e2 = F.conv2d(e1, torch.empty(8, 8, 3, 3, device="meta"), stride=2, padding=1)
    assert F.interpolate(e2, scale_factor=2).shape[-1] == 34 and e1.shape[-1] == 33


def test_input_size_constraints_quiet_when_all_sizes_work_or_example_fails():
    n = Net((1, 3, 20, 20))
    n.conv("c1", "x", 8, 3, p=1)
    n.conv("c2", "c1", 8, 3, s=2, p=1)
    assert run(input_size_constraints, n.g, passes=True) == []
    failing = _residual_pyramid(62)
    assert failing.g.nodes["sum"]["error"] is not None
    assert run(input_size_constraints, failing.g, passes=True) == []


def test_spatial_collapse_gives_the_smallest_input_that_works():
    n = Net((1, 8, 8, 8))
    n.pool("p1", "x", 2, 2)
    n.pool("p2", "p1", 2, 2)
    n.pool("p3", "p2", 2, 2)
    n.conv("head", "p3", 8, 3)
    (f,) = run(spatial_collapse, n.g, passes=True)
    assert "feed at least 24x24" in f.fix  # 3 * 2**3
    # the sides that reach the head: 8..23 collapse it, 24 and up do not
    assert f.sizes == "fires at H = W in 8..23 only; avoided at H = W in all n >= 24"


# -- the real pipeline: fixtures through the frontends, and the reference zoo -----------------

from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PITFALL_RULES = (
    "dilation-padding-mismatch", "misaligned-merge", "kernel-smaller-than-stride",
    "spatial-collapse", "even-kernel-same-padding", "pool-drops-border",
    "avgpool-count-include-pad", "transposed-conv-output-ambiguity", "conv-bias-before-norm",
    "large-dense-head", "receptive-field-coverage", "input-size-constraints",
)


def test_output_size_in_forward_keeps_the_transposed_conv_quiet_at_odd_sizes():
    from archlint.api import lint

    path = ROOT / "fixtures" / "models" / "transposed_conv_output_ambiguity_good.py"
    report = lint(path, example_inputs=(1, 3, 50, 50), select=["transposed-conv-output-ambiguity"])
    assert [m.error for m in report.models] == [None]
    assert report.models[0].graph.nodes["up"]["shapes"][0][2:] == (25, 25)
    assert report.findings == []


@pytest.mark.parametrize(
    "stem,expected",
    [
        ("dilation_padding_mismatch_bad", {"dilation-padding-mismatch"}),
        ("conv_bias_before_norm_bad", {"conv-bias-before-norm"}),
        ("kernel_smaller_than_stride_bad", {"kernel-smaller-than-stride"}),
        ("large_dense_head_bad", {"large-dense-head"}),
        ("misaligned_merge_bad", {"misaligned-merge", "input-size-constraints"}),
    ],
)
@pytest.mark.filterwarnings("ignore")
def test_onnx_export_of_a_bad_fixture_gets_the_same_findings(stem, expected, tmp_path):
    import importlib.util

    from archlint.api import lint

    spec = importlib.util.spec_from_file_location(f"pitfall_{stem}", ROOT / "fixtures" / "models" / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model_cls = [v for v in vars(module).values()
                 if isinstance(v, type) and issubclass(v, torch.nn.Module) and v.__module__ == module.__name__]
    onnx_path = tmp_path / f"{stem}.onnx"
    try:
        torch.onnx.export(model_cls[-1]().eval(), (module.example_input,), str(onnx_path), dynamo=False,
                          do_constant_folding=False, training=torch.onnx.TrainingMode.TRAINING)
    except Exception as exc:  # the exporter, not archlint: nothing to compare
        pytest.skip(f"torch.onnx.export failed: {exc}")
    torch_ids = {f.rule for f in lint(ROOT / "fixtures" / "models" / f"{stem}.py", select=list(PITFALL_RULES)).findings
                 if f.severity != "info" or f.rule in expected}
    onnx_ids = {f.rule for f in lint(onnx_path, select=list(PITFALL_RULES)).findings
                if f.severity != "info" or f.rule in expected}
    assert expected <= torch_ids
    assert onnx_ids == torch_ids


ZOO_FILES = sorted((ROOT / "fixtures" / "zoo").glob("*.py"))


@pytest.fixture(scope="module")
def zoo_reports():
    from archlint.api import lint
    from archlint.config import Options

    return {p.stem: lint(p, config=Options(), select=list(PITFALL_RULES)) for p in ZOO_FILES}


def test_zoo_is_quiet_at_warning_except_the_dense_heads(zoo_reports):
    loud = []
    for stem, report in zoo_reports.items():
        for m in report.models:
            assert m.error is None, f"{stem}: {m.error}"
            loud += [(m.model, f.rule, f.location.node) for f in m.findings if f.severity.rank >= 1]
    assert sorted(loud) == [("AlexNet", "large-dense-head", "classifier.fc6"),
                            ("VGG16", "large-dense-head", "classifier.fc6")]


def test_dense_head_counts_match_pytorch(zoo_reports):
    import importlib.util

    for stem, cls, fc in (("vgg", "VGG16", "fc6"), ("alexnet", "AlexNet", "fc6")):
        spec = importlib.util.spec_from_file_location(f"pitfall_zoo_{stem}", ROOT / "fixtures" / "zoo" / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with torch.device("meta"):
            model = getattr(module, cls)()
        total = sum(p.numel() for p in model.parameters())
        head = sum(p.numel() for p in getattr(model.classifier, fc).parameters())
        (f,) = [f for f in zoo_reports[stem].findings if f.rule == "large-dense-head"]
        assert f"holds {head:,} of the model's {total:,}" in f.message


def test_zoo_facts_at_info(zoo_reports):
    def findings(stem, rule):
        return [f for m in zoo_reports[stem].models for f in m.findings if f.rule == rule]

    # ResNet-18/50/50-v1.5 projection shortcuts, and v1's main-branch 1x1/2 convs: info only.
    projections = findings("resnet", "kernel-smaller-than-stride")
    assert len(projections) == 3 + 3 + 6 and all(f.severity == "info" for f in projections)
    (unet_sizes,) = findings("unet", "input-size-constraints")
    assert "n >= 16 with n % 16 == 0" in unet_sizes.message
    assert findings("resnet", "receptive-field-coverage") == []  # 400+ px fields on 224
    assert findings("deeplab", "misaligned-merge") == [] and findings("senet", "misaligned-merge") == []
