"""The size formulas against what PyTorch really does: same shape, or both say it fails.

Every case runs the real op on a tiny tensor and compares with the formula at the same size,
both through the scalar entry point (``infer_spatial``) and the vectorized one (``axis_size``
on an int64 array of every size at once).
"""

from __future__ import annotations

import dataclasses

import itertools
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from archlint.graph import Attrs  # noqa: E402
from archlint.passes.formulas import (  # noqa: E402
    ShapeError,
    UnsupportedOp,
    always_invalid,
    axis_size,
    infer_spatial,
    slice_size,
)

SIZES = range(1, 41)



ARRAY = np.arange(1, 41, dtype=np.int64)


def torch_spatial(fn, x):
    """Output spatial shape, or None when PyTorch raises (or returns an empty map)."""
    try:
        with torch.no_grad():
            y = fn(x)
    except (RuntimeError, ValueError, IndexError):
        return None
    shape = tuple(y.shape[2:])
    return None if any(v < 1 for v in shape) else shape


def formula_spatial(op, attrs, spatial):
    try:
        return infer_spatial(op, attrs, [spatial])
    except ShapeError:
        return None


def vector_spatial(op, attrs, axis=0, semantics="torch"):
    """Per size in SIZES: the vectorized formula's output, or None where it says invalid."""
    if always_invalid(op, attrs, semantics):
        return [None] * len(ARRAY)
    out, invalid = axis_size(op, attrs, axis, ARRAY, semantics=semantics)
    out = np.broadcast_to(out, ARRAY.shape)
    invalid = np.broadcast_to(invalid, ARRAY.shape)
    return [None if bad else (int(v),) for v, bad in zip(out, invalid)]


def check_1d(op, attrs, fn, sizes=SIZES):
    """Compare torch, the scalar formula and the vector formula at every size in ``sizes``."""
    expected = [torch_spatial(fn, torch.zeros(1, 1, n)) for n in sizes]
    scalar = [formula_spatial(op, attrs, (n,)) for n in sizes]
    vector = vector_spatial(op, attrs)
    for n, e, s, v in zip(sizes, expected, scalar, vector):
        assert s == e, f"{op} {attrs} at n={n}: formula {s}, torch {e}"
        assert v == e, f"{op} {attrs} at n={n} (vectorized): formula {v}, torch {e}"
    return expected


def window_attrs(k, s, p, d=1, ceil=False, output_padding=0, mode="zeros"):
    return Attrs(kernel=(k,), stride=(s,), dilation=(d,), padding=((p, p),),
                 ceil_mode=ceil, output_padding=(output_padding,), padding_mode=mode)


W1 = torch.ones(1, 1, 7)


def test_conv1d_every_geometry():
    for k, s, d in itertools.product(range(1, 8), range(1, 4), range(1, 4)):
        for p in range(0, k // 2 + 2):
            check_1d("conv", window_attrs(k, s, p, d),
                     lambda x: F.conv1d(x, W1[..., :k], stride=s, padding=p, dilation=d))


def test_conv1d_padding_modes():
    for mode, k, p in itertools.product(("reflect", "circular", "replicate"), (3, 5, 7), (1, 2, 3)):
        conv = torch.nn.Conv1d(1, 1, k, padding=p, padding_mode=mode, bias=False)
        check_1d("conv", window_attrs(k, 1, p, mode=mode), conv, sizes=range(1, 9))


def test_max_pool1d_every_geometry():
    for k, s, d, ceil in itertools.product(range(1, 8), range(1, 4), range(1, 4), (False, True)):
        for p in range(0, k // 2 + 2):  # one pad past the limit: torch raises at every size
            check_1d("max_pool", window_attrs(k, s, p, d, ceil),
                     lambda x: F.max_pool1d(x, k, s, p, d, ceil_mode=ceil))


def test_avg_pool1d_every_geometry():
    for k, s, ceil in itertools.product(range(1, 8), range(1, 4), (False, True)):
        for p in range(0, k // 2 + 2):
            check_1d("avg_pool", window_attrs(k, s, p, 1, ceil),
                     lambda x: F.avg_pool1d(x, k, s, p, ceil_mode=ceil))


def test_lp_pool1d():
    for k, s, ceil in itertools.product(range(1, 6), range(1, 4), (False, True)):
        check_1d("lp_pool", window_attrs(k, s, 0, 1, ceil),
                 lambda x: F.lp_pool1d(x + 1, 2, k, s, ceil_mode=ceil))


def test_conv_transpose1d_every_geometry():
    for k, s, d in itertools.product(range(1, 8), range(1, 4), range(1, 4)):
        for p in range(0, k // 2 + 1):
            for op in range(0, max(s, d) + 1):  # the last one is invalid at every size
                check_1d("conv_transpose", window_attrs(k, s, p, d, output_padding=op),
                         lambda x: F.conv_transpose1d(x, W1[..., :k], stride=s, padding=p,
                                                      output_padding=op, dilation=d))


def test_the_ceil_mode_last_window_rule_matters():
    # n=5, k=2, s=2, p=1, ceil: without the rule the formula says 4, torch says 3
    attrs = window_attrs(2, 2, 1, ceil=True)
    assert infer_spatial("max_pool", attrs, [(5,)]) == (3,)
    legacy = dataclasses.replace(attrs, extra={"onnx_legacy_ceil": True})
    assert infer_spatial("max_pool", legacy, [(5,)]) == (4,)


def test_onnx_pad_rule_differs_from_torch():
    attrs = window_attrs(3, 1, 2)
    assert always_invalid("max_pool", attrs) is not None
    assert always_invalid("max_pool", attrs, semantics="onnx") is None


def test_2d_and_3d_windows_random():
    rng = random.Random(0)
    for _ in range(60):
        nd = rng.choice((2, 3))
        op = rng.choice(("conv", "max_pool", "avg_pool", "conv_transpose"))
        k = tuple(rng.randint(1, 5) for _ in range(nd))
        s = tuple(rng.randint(1, 3) for _ in range(nd))
        d = tuple(rng.randint(1, 2) for _ in range(nd)) if op in ("conv", "max_pool", "conv_transpose") else (1,) * nd
        p = tuple(rng.randint(0, ki // 2) for ki in k)
        ceil = rng.random() < 0.5 and op in ("max_pool", "avg_pool")
        outp = tuple(rng.randint(0, max(si, di) - 1) for si, di in zip(s, d)) if op == "conv_transpose" else (0,) * nd
        attrs = Attrs(kernel=k, stride=s, dilation=d, padding=tuple((v, v) for v in p),
                      ceil_mode=ceil, output_padding=outp)
        w = torch.ones((1, 1, *k))
        fn = {
            "conv": lambda x: (F.conv2d if nd == 2 else F.conv3d)(x, w, stride=s, padding=p, dilation=d),
            "conv_transpose": lambda x: (F.conv_transpose2d if nd == 2 else F.conv_transpose3d)(
                x, w, stride=s, padding=p, output_padding=outp, dilation=d),
            "max_pool": lambda x: (F.max_pool2d if nd == 2 else F.max_pool3d)(x, k, s, p, d, ceil_mode=ceil),
            "avg_pool": lambda x: (F.avg_pool2d if nd == 2 else F.avg_pool3d)(x, k, s, p, ceil_mode=ceil),
        }[op]
        for _ in range(6):
            spatial = tuple(rng.randint(1, 12) for _ in range(nd))
            expected = torch_spatial(fn, torch.zeros(1, 1, *spatial))
            assert formula_spatial(op, attrs, spatial) == expected, (op, attrs, spatial)


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bicubic", "nearest-exact"])
@pytest.mark.parametrize("scale", [2.0, 1.5, 0.5, 0.3, 2.5, 1 / 3])
def test_interpolate_by_scale(mode, scale):
    attrs = Attrs(scale=(scale, scale), mode=mode)
    for n in range(1, 41):
        expected = torch_spatial(lambda x: F.interpolate(x, scale_factor=scale, mode=mode),
                                 torch.zeros(1, 1, n, n))
        assert formula_spatial("upsample", attrs, (n, n)) == expected, (n, scale, mode)
    vector = vector_spatial("upsample", attrs)
    assert vector == [formula_spatial("upsample", attrs, (n, n))[:1] if formula_spatial("upsample", attrs, (n, n)) else None for n in SIZES]


def test_interpolate_by_size_and_size_from():
    attrs = Attrs(size=(7, 9), mode="nearest")
    assert infer_spatial("upsample", attrs, [(3, 40)]) == (7, 9)
    attrs = Attrs(size_from="skip", mode="bilinear")
    assert infer_spatial("upsample", attrs, [(3, 4), (13, 17)]) == (13, 17)


@pytest.mark.parametrize("fn,kind", [(F.adaptive_avg_pool2d, "avg"), (F.adaptive_max_pool2d, "max")])
def test_adaptive_pools(fn, kind):
    for target in [(1, 1), (7, 7), (3, None), (5, 2)]:
        attrs = Attrs(size=target, extra={"kind": kind})
        for n in (1, 2, 3, 7, 10, 33):
            expected = torch_spatial(lambda x: fn(x, target), torch.zeros(1, 1, n, n + 1))
            assert formula_spatial("adaptive_pool", attrs, (n, n + 1)) == expected


def test_pad_including_negative_pads():
    for mode in ("constant", "reflect", "replicate", "circular"):
        ir_mode = "zeros" if mode == "constant" else mode
        for pb, pe in itertools.product(range(-6, 7), repeat=2):
            attrs = Attrs(padding=((pb, pe),), padding_mode=ir_mode)
            check_1d("pad", attrs, lambda x: F.pad(x, (pb, pe), mode=mode), sizes=range(1, 10))


def test_slices_match_python():
    rng = random.Random(1)
    bounds = [None, *range(-6, 7), 100, -100]
    for _ in range(300):
        start, stop, step = rng.choice(bounds), rng.choice(bounds), rng.randint(1, 4)
        attrs = Attrs(slices=((start, stop, step),))
        for n in range(1, 15):
            expected = len(range(n)[start:stop:step])
            got = torch.zeros(1, 1, n)[:, :, start:stop:step].shape[2]
            assert got == expected
            assert int(slice_size(n, start, stop, step)) == expected
            assert formula_spatial("slice", attrs, (n,)) == ((expected,) if expected else None)
        out, invalid = axis_size("slice", attrs, 0, ARRAY)
        assert list(out) == [len(range(n)[start:stop:step]) for n in SIZES]
        assert list(invalid) == [len(range(n)[start:stop:step]) == 0 for n in SIZES]


def test_pixel_shuffle_and_unshuffle():
    for r in (1, 2, 3):
        shuffle = Attrs(factor=r)
        for n in range(1, 13):
            x = torch.zeros(1, r * r, n, n + 1)
            assert formula_spatial("pixel_shuffle", shuffle, (n, n + 1)) == torch_spatial(
                lambda t: F.pixel_shuffle(t, r), x)
            assert formula_spatial("pixel_unshuffle", shuffle, (n, n + 1)) == torch_spatial(
                lambda t: F.pixel_unshuffle(t, r), torch.zeros(1, 1, n, n + 1))


def test_merges_and_flat_ops():
    assert infer_spatial("add", Attrs(), [(5, 6), (5, 6)]) == (5, 6)
    assert infer_spatial("mul", Attrs(), [(5, 6), (1, 1)]) == (5, 6)
    with pytest.raises(ShapeError):
        infer_spatial("add", Attrs(), [(5, 6), (4, 6)])
    assert infer_spatial("concat", Attrs(axis=1), [(5, 6), (5, 6)]) == (5, 6)
    assert infer_spatial("concat", Attrs(axis=-1), [(5, 6), (5, 2)]) == (5, 8)
    with pytest.raises(ShapeError):
        infer_spatial("concat", Attrs(axis=1), [(5, 6), (5, 7)])
    assert infer_spatial("flatten", Attrs(axis=1), [(5, 6)]) == ()
    assert infer_spatial("linear", Attrs(in_features=6, out_features=3), [(5, 6)]) == (5, 3)
    with pytest.raises(ShapeError):
        infer_spatial("linear", Attrs(in_features=7, out_features=3), [(5, 6)])
    with pytest.raises(UnsupportedOp):
        infer_spatial("reshape", Attrs(target_shape=(None, -1)), [(5, 6)])
    assert infer_spatial("global_pool", Attrs(), [(5, 6)]) == (1, 1)
    assert infer_spatial("norm", Attrs(), [(5, 6)]) == (5, 6)


def test_onnx_same_auto_pad_is_ceil_at_every_size():
    for s in (1, 2, 3):
        attrs = Attrs(kernel=(3,), stride=(s,), padding=((1, 1),), auto_pad="SAME_UPPER")
        for n in SIZES:
            assert infer_spatial("conv", attrs, [(n,)]) == (-(-n // s),)


def test_shape_error_is_one_line_with_numbers():
    with pytest.raises(ShapeError) as exc:
        infer_spatial("conv", window_attrs(7, 1, 0), [(4,)])
    assert "\n" not in str(exc.value) and "7" in str(exc.value) and "4" in str(exc.value)


def test_conv_transpose_with_output_size():
    """``up(x, output_size=ref)``: torch picks output_padding; a target out of reach raises."""
    for k, s, p in itertools.product(range(1, 5), range(1, 4), range(0, 2)):
        attrs = Attrs(kernel=(k,), stride=(s,), padding=((p, p),), output_padding=(0,),
                      size_from="skip")
        m = torch.nn.ConvTranspose1d(1, 1, k, s, p)
        for n, target in itertools.product(range(1, 8), range(1, 20)):
            expected = torch_spatial(lambda x: m(x, output_size=[target]), torch.zeros(1, 1, n))
            try:
                got = infer_spatial("conv_transpose", attrs, [(n,), (target,)])
            except ShapeError:
                got = None
            assert got == expected, (k, s, p, n, target)


def test_nonsense_attributes_fail_cleanly():
    for attrs in (window_attrs(-1, 1, 0), window_attrs(3, 0, 0), window_attrs(3, 1, 0, d=0)):
        for op in ("conv", "max_pool", "conv_transpose"):
            assert always_invalid(op, attrs)
            with pytest.raises(ShapeError):
                infer_spatial(op, attrs, [(8,)])
    for scale in (float("nan"), float("inf"), 0.0, -2.0):
        with pytest.raises(ShapeError):
            infer_spatial("upsample", Attrs(scale=(scale,)), [(8,)])
    with pytest.raises(UnsupportedOp):
        infer_spatial("slice", Attrs(slices=((0, 4, 0),)), [(8,)])
