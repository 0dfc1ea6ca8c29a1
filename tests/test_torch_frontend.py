"""The PyTorch frontend: discovery, example inputs, locations, shapes, failures, fallbacks.

Shapes are checked against a real CPU forward of the same model at small sizes.
"""

from __future__ import annotations

import copy
import sys
import textwrap
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.fx as fx  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils import _pytree as pytree  # noqa: E402

from archlint.config import Options, load_config  # noqa: E402
from archlint.frontends import TargetError  # noqa: E402
from archlint.frontends import torch as frontend  # noqa: E402
from archlint.frontends.source import defines_models  # noqa: E402
from archlint.graph import OP_KINDS, ops  # noqa: E402

DATA = Path(__file__).parent / "data" / "torch_frontend"
MANY_OPS = DATA / "many_ops.py"

HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"


def write(tmp_path: Path, body: str, name: str = "model.py") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return path


def capture(path: Path, **options) -> list:
    return frontend.capture_file(path, Options(**options))


def only(path: Path, **options):
    captures = capture(path, **options)
    assert len(captures) == 1, [c.name for c in captures]
    return captures[0]


def line_of(path: Path, marker: str) -> int:
    """1-based line of the unique source line containing ``marker``."""
    hits = [i for i, text in enumerate(path.read_text().splitlines(), 1) if marker in text]
    assert len(hits) == 1, (marker, hits)
    return hits[0]


def node_by_origin(g, origin: str) -> str:
    names = [n for n in g if g.nodes[n]["origin"] == origin]
    assert len(names) == 1, (origin, names)
    return names[0]


def real_fx_shapes(module: nn.Module, inputs: list) -> dict[str, tuple]:
    """Every fx node's output shapes from a real CPU run (the reference for the meta engine)."""
    gm = frontend.trace(module, len(inputs))
    shapes: dict[str, tuple] = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            shapes[n.name] = tuple(
                tuple(t.shape) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)
            )
            return out

    with torch.no_grad():
        Recorder(gm).run(*inputs)
    return shapes


def real_module_shapes(module: nn.Module, inputs: list) -> dict[str, tuple]:
    """Output shape of every leaf module call from forward hooks (independent of fx)."""
    seen: dict[str, tuple] = {}
    handles = []
    for name, m in module.named_modules():
        if name and not list(m.children()):
            def hook(mod, args, out, name=name):
                seen.setdefault(name, tuple(
                    tuple(t.shape) for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)))
            handles.append(m.register_forward_hook(hook))
    with torch.no_grad():
        module(*inputs)
    for h in handles:
        h.remove()
    return seen


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------

TWO_CLASSES = """
class Block(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


class NeedsArgs(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)

    def forward(self, x):
        return self.conv(x)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3)
        self.block = Block()

    def forward(self, x):
        return self.block(self.stem(x))


class Other(nn.Module):
    def __init__(self, scale=2):
        super().__init__()
        self.fc = nn.Linear(8, scale)

    def forward(self, x):
        return self.fc(x)


def make_wide():
    return NeedsArgs(16)


def needs_width(width):
    return NeedsArgs(width)


NOT_A_MODEL = 3
"""


def test_classes_mode_builds_zero_arg_classes_and_drops_parts(tmp_path):
    path = write(tmp_path, TWO_CLASSES)
    captures = capture(path)
    # Block is a part of Net (linted in place); NeedsArgs needs arguments.
    assert [c.name for c in captures] == ["Net", "Other"]
    assert all(c.error is None for c in captures)
    net = captures[0].graph
    assert net.graph["module_factory"] is not None
    assert net.graph["module"] is None


def test_instances_mode_wins_over_classes_and_skips_nested_instances(tmp_path):
    path = write(tmp_path, TWO_CLASSES + """
backbone = Block(3)
model = nn.Sequential(backbone, nn.ReLU())
other = Other()
""")
    captures = capture(path)
    assert [c.name for c in captures] == ["model", "other"]
    model = captures[0].graph
    assert model.graph["module"] is not None and model.graph["module_factory"] is None


@pytest.mark.parametrize(
    "name, expected_out",
    [("make_wide", 16), ("Net", 4), ("block_instance", 3)],
)
def test_model_option_accepts_factory_class_and_instance(tmp_path, name, expected_out):
    path = write(tmp_path, TWO_CLASSES + "\nblock_instance = Block(3)\n")
    c = only(path, model=name, input_shapes=((1, 3, 16, 16),))
    assert c.name == name
    assert c.error is None
    out = [n for n in c.graph if c.graph.nodes[n]["op"] == "output"][0]
    assert c.graph.nodes[out]["shapes"][0][1] == expected_out


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("missing", "has no attribute 'missing'"),
        ("NeedsArgs", "needs constructor arguments (width)"),
        ("needs_width", "needs arguments (width)"),
        ("NOT_A_MODEL", "is a int, not an nn.Module"),
    ],
)
def test_model_option_errors_are_one_line_target_errors(tmp_path, name, fragment):
    path = write(tmp_path, TWO_CLASSES)
    with pytest.raises(TargetError) as info:
        capture(path, model=name)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_no_model_found_names_the_classes_that_need_arguments(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self, width, depth=2):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3)

    def forward(self, x):
        return self.conv(x)
""")
    with pytest.raises(TargetError, match=r"Net needs width.*--model"):
        capture(path)


def test_file_without_models_is_a_target_error(tmp_path):
    path = write(tmp_path, "x = torch.zeros(3)\n")
    with pytest.raises(TargetError, match="no model found"):
        capture(path)


def test_factory_returning_non_module_is_a_capture_error(tmp_path):
    path = write(tmp_path, "def build():\n    return 3\n")
    c = only(path, model="build")
    assert c.graph is None and "returned int, not an nn.Module" in c.error


# ---------------------------------------------------------------------------------------------
# Whole-target failures
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, fragments",
    [
        ("def f(:\n    pass\n", ["syntax error at", "model.py:4"]),
        ("import no_such_module_for_archlint\n",
         ["ModuleNotFoundError", "no_such_module_for_archlint", "model.py:4"]),
        ("raise ValueError('bad\\nsecond line')\n", ["raised ValueError: bad", "model.py:4"]),
        ("import sys\nsys.exit(3)\n", ["sys.exit(3)"]),
        ("raise SystemExit\n", ["sys.exit(None)"]),
    ],
)
def test_import_failures_are_one_line_target_errors(tmp_path, body, fragments):
    path = write(tmp_path, body)
    with pytest.raises(TargetError) as info:
        capture(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_sibling_imports_work_and_sys_path_is_restored(tmp_path):
    (tmp_path / "layers_for_archlint_test.py").write_text(
        HEADER + "def block(c):\n    return nn.Conv2d(c, c, 3, padding=1)  # sibling\n"
    )
    path = write(tmp_path, """
from layers_for_archlint_test import block

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.b = block(3)

    def forward(self, x):
        return self.b(x)
""")
    before = list(sys.path)
    c = only(path)
    assert sys.path == before
    loc = c.graph.nodes["b"]["location"]
    # built by a helper in the sibling file: the call site in the model, where the args are chosen
    assert Path(loc.file).resolve() == path.resolve()
    assert loc.line == line_of(path, "self.b = block(3)")


def test_layers_built_by_a_helper_are_located_at_each_call(tmp_path):
    path = write(tmp_path, """
def conv_bn(c_in, c_out, stride):
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.BatchNorm2d(c_out))

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn(3, 8, 2),  # first
            conv_bn(8, 8, 1),  # second
        )

    def forward(self, x):
        return self.stem(x)
""")
    g = only(path).graph
    lines = {g.nodes[n]["location"].node: g.nodes[n]["location"].line for n in g}
    assert lines["stem.0.0"] == line_of(path, "# first")
    assert lines["stem.1.0"] == line_of(path, "# second")


def test_construction_error_is_a_capture_error_not_a_target_error(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding="same")  # bad

    def forward(self, x):
        return self.conv(x)
""")
    c = only(path)
    assert c.graph is None
    assert c.error.startswith("could not build Net: ValueError: padding='same' is not supported")
    assert f"model.py:{line_of(path, '# bad')}" in c.error


# ---------------------------------------------------------------------------------------------
# Example inputs
# ---------------------------------------------------------------------------------------------

CONV_NET = """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        return self.conv(x)
"""


def test_module_level_example_input_is_used(tmp_path):
    path = write(tmp_path, CONV_NET + "\nexample_input = torch.randn(2, 3, 33, 17)\n")
    g = only(path).graph
    assert g.graph["input_shapes"] == [(2, 3, 33, 17)]
    assert g.graph["input_assumed"] is False
    assert g.nodes["conv"]["shapes"] == ((2, 8, 16, 8),)


def test_assumed_input_is_flagged_with_a_note(tmp_path):
    path = write(tmp_path, CONV_NET)
    c = only(path)
    assert c.graph.graph["input_assumed"] is True
    assert c.graph.graph["input_shapes"] == [(1, 3, 224, 224)]
    assert any("1,3,224,224 assumed" in n and "--input-shape" in n for n in c.notes)


@pytest.mark.parametrize(
    "layer, expected",
    [
        ("nn.Conv1d(5, 8, 3)", (1, 5, 1024)),
        ("nn.Conv3d(2, 8, 3)", (1, 2, 16, 112, 112)),
        ("nn.Linear(7, 3)", (1, 7)),
    ],
)
def test_inferred_input_follows_the_first_layer(tmp_path, layer, expected):
    path = write(tmp_path, f"""
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.first = {layer}

    def forward(self, x):
        return self.first(x)
""")
    assert only(path).graph.graph["input_shapes"] == [expected]


def test_embedding_first_model_gets_integer_input(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(100, 16)
        self.fc = nn.Linear(16, 2)

    def forward(self, tokens):
        return self.fc(self.emb(tokens))
""")
    g = only(path).graph
    assert g.graph["input_dtypes"] == ["int64"]
    assert g.nodes["fc"]["shapes"] == ((1, 128, 2),)


def test_input_precedence_cli_then_file_then_config(tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.archlint]\ninput-shape = [1, 3, 40, 40]\n")
    with_var = write(tmp_path, CONV_NET + "\nexample_input = torch.randn(1, 3, 20, 20)\n", "a.py")
    without = write(tmp_path, CONV_NET, "b.py")
    config = load_config(tmp_path)
    def shapes(path, options, **kwargs):
        return frontend.capture_file(path, options, **kwargs)[0].graph.graph["input_shapes"]

    assert shapes(with_var, config) == [(1, 3, 20, 20)]
    assert shapes(without, config) == [(1, 3, 40, 40)]
    cli = config.merged(input_shapes=((1, 3, 10, 10),))
    assert shapes(with_var, cli) == [(1, 3, 10, 10)]
    # the API's example_inputs beats the file's variable too
    assert shapes(with_var, config, example_inputs=(1, 3, 12, 12)) == [(1, 3, 12, 12)]


def test_several_inputs_from_a_tuple(tmp_path):
    path = write(tmp_path, """
class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(5, 4, 1)

    def forward(self, x, y, scale=None):
        if scale is not None:
            x = x * scale
        return self.a(x) + self.b(y)

example_input = (torch.randn(1, 3, 8, 8), torch.randn(1, 5, 8, 8))
""")
    g = only(path).graph
    assert [g.nodes[n]["op"] for n in g if g.nodes[n]["op"] == "input"] == ["input", "input"]
    add = node_by_origin(g, "operator.add")
    assert g.nodes[add]["op"] == "add" and g.nodes[add]["shapes"] == ((1, 4, 8, 8),)


def test_too_few_inputs_is_a_clean_capture_error(tmp_path):
    path = write(tmp_path, """
class Two(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3)

    def forward(self, x, y):
        return self.a(x) + y
""")
    c = only(path)
    assert c.graph is None and "takes 2 inputs (x, y)" in c.error


# ---------------------------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------------------------

LOCATED = """
class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)  # block conv

    def forward(self, x):
        return self.conv(x) + x  # block add


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3,
                      padding=1),  # not this line
            nn.ReLU(),  # relu line
            Block(8),  # block line
        )
        self.up = nn.ConvTranspose2d(8, 8, 2, stride=2)  # up line

    def forward(self, x):
        y = self.body(x)
        z = self.up(y)
        return torch.cat([z, F.interpolate(y, scale_factor=2)], 1)  # cat line
"""


def test_layer_locations_are_construction_lines(tmp_path):
    path = write(tmp_path, LOCATED)
    g = only(path, input_shapes=((1, 3, 8, 8),)).graph
    first_conv = g.nodes["body_0"]["location"]
    assert first_conv.file == str(path)
    assert first_conv.line == line_of(path, "nn.Conv2d(3, 8, 3,")
    assert first_conv.node == "body.0"
    assert g.nodes["body_1"]["location"].line == line_of(path, "# relu line")
    assert g.nodes["up"]["location"].line == line_of(path, "# up line")
    assert g.nodes["body_2_conv"]["location"].line == line_of(path, "# block conv")
    assert g.nodes["body_2_conv"]["location"].node == "body.2.conv"


def test_merge_locations_are_forward_lines(tmp_path):
    path = write(tmp_path, LOCATED)
    g = only(path, input_shapes=((1, 3, 8, 8),)).graph
    cat = g.nodes[node_by_origin(g, "torch.cat")]
    assert (cat["location"].file, cat["location"].line) == (str(path), line_of(path, "# cat line"))
    add = g.nodes[node_by_origin(g, "operator.add")]
    assert add["location"].line == line_of(path, "# block add")
    interp = g.nodes[node_by_origin(g, "F.interpolate")]
    assert interp["location"].line == line_of(path, "# cat line")
    assert interp["location"].node == "interpolate"


def test_capture_module_locates_layers_from_the_class_source():
    net = _LocatedNet()
    c = frontend.capture_module(net, torch.randn(1, 3, 8, 8), Options())
    assert c.error is None
    loc = c.graph.nodes["convs_1"]["location"]
    assert loc.file == str(Path(__file__).resolve())
    assert loc.line == line_of(Path(__file__), "# second conv of " + "_LocatedNet")
    assert c.graph.graph["module"] is net


class _LocatedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.Conv2d(4, 4, 3, padding=1),  # second conv of _LocatedNet
        )

    def forward(self, x):
        return self.convs(x)


# ---------------------------------------------------------------------------------------------
# Shapes match a real forward, node by node
# ---------------------------------------------------------------------------------------------

REAL_SIZES = {
    "Windows": (1, 3, 37, 41),
    "Resizing": (1, 3, 16, 16),
    "Head": (2, 3, 9, 7),
    "Sequence": (1, 4, 33),
}


@pytest.fixture(scope="module")
def many_ops_captures():
    return {
        name: frontend.capture_file(MANY_OPS, Options(model=name, input_shapes=(shape,)))[0]
        for name, shape in REAL_SIZES.items()
    }


@pytest.mark.parametrize("name", sorted(REAL_SIZES))
def test_shapes_match_a_real_forward_at_every_node(many_ops_captures, name):
    c = many_ops_captures[name]
    assert c.error is None, c.error
    g = c.graph
    model = g.graph["module_factory"]().eval()
    x = torch.randn(REAL_SIZES[name])
    real = real_fx_shapes(model, [x])
    for fx_name, ir_name in g.graph["fx_names"].items():
        node = g.nodes[ir_name]
        if fx_name == ir_name:
            if node["op"] == "output":
                continue  # the output node lists the returned tensors; checked below
            assert node["shapes"] == real[fx_name], fx_name
        else:  # an alias (element 0 of a tuple output) has the producer's main shape
            assert node["shapes"][0] == real[fx_name][0], fx_name
    assert set(g.graph["fx_names"].values()) == set(g)
    by_module = real_module_shapes(model, [x])
    for n in g:
        qualname = g.nodes[n]["location"].node
        if qualname in by_module:
            assert g.nodes[n]["shapes"] == by_module[qualname], qualname
    out = next(n for n in g if g.nodes[n]["op"] == "output")
    real_out = model(x)
    leaves = [t for t in pytree.tree_leaves(real_out) if isinstance(t, torch.Tensor)]
    assert g.nodes[out]["shapes"] == tuple(tuple(t.shape) for t in leaves)


def test_every_op_kind_is_valid_and_nothing_is_dropped(many_ops_captures):
    for c in many_ops_captures.values():
        g = c.graph
        assert all(g.nodes[n]["op"] in OP_KINDS for n in g)
        assert list(ops(g))  # a DAG
    kinds = {c.graph.nodes[n]["op"] for c in many_ops_captures.values() for n in c.graph}
    assert kinds >= {"conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool", "adaptive_pool",
                     "global_pool", "upsample", "pad", "slice", "add", "sub", "mul", "concat",
                     "flatten", "reshape", "linear", "norm", "pointwise", "pixel_shuffle",
                     "pixel_unshuffle", "unknown", "input", "output"}


# ---------------------------------------------------------------------------------------------
# Attributes, normalized exactly as PyTorch computes them
# ---------------------------------------------------------------------------------------------


def _attrs(captures, model: str, node: str):
    return captures[model].graph.nodes[node]["attrs"]


def test_same_padding_is_explicit_and_matches_pytorch(many_ops_captures):
    a = _attrs(many_ops_captures, "Windows", "same_even")
    assert a.auto_pad == "same" and a.padding == ((1, 2), (1, 2))
    # the explicit pads reproduce PyTorch's own 'same' output exactly
    conv = nn.Conv2d(3, 4, 4, padding="same")
    x = torch.randn(1, 3, 9, 10)
    explicit = F.conv2d(F.pad(x, (a.padding[1][0], a.padding[1][1], a.padding[0][0],
                                  a.padding[0][1])), conv.weight, conv.bias)
    assert torch.allclose(explicit, conv(x), atol=1e-6)
    valid = _attrs(many_ops_captures, "Windows", "valid")
    assert valid.auto_pad == "valid" and valid.padding == ((0, 0), (0, 0))
    assert valid.kernel == (3, 5)


def test_window_attrs(many_ops_captures):
    d = _attrs(many_ops_captures, "Windows", "dilated")
    assert (d.kernel, d.stride, d.dilation, d.padding) == ((3, 3), (2, 2), (2, 2), ((2, 2), (2, 2)))
    p = _attrs(many_ops_captures, "Windows", "pool")
    assert (p.kernel, p.stride, p.ceil_mode) == ((3, 3), (2, 2), True)
    avg = _attrs(many_ops_captures, "Windows", "avg")
    assert avg.count_include_pad is False and avg.padding == ((1, 1), (1, 1))
    up = _attrs(many_ops_captures, "Windows", "up")
    assert (up.kernel, up.stride, up.padding, up.output_padding) == (
        (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1))
    fn_pool = _attrs(many_ops_captures, "Windows", "max_pool2d")
    assert (fn_pool.kernel, fn_pool.stride, fn_pool.ceil_mode) == ((2, 2), (2, 2), True)
    refl = _attrs(many_ops_captures, "Windows", "reflect")
    assert refl.padding_mode == "reflect"
    conv1d = _attrs(many_ops_captures, "Sequence", "conv")
    assert (conv1d.kernel, conv1d.stride, conv1d.padding) == ((5,), (2,), ((2, 2),))


def test_pad_lists_last_dim_first(many_ops_captures):
    g = many_ops_captures["Resizing"].graph
    # nn.ZeroPad2d((left=1, right=0, top=2, bottom=0)) -> H (2, 0), W (1, 0)
    assert g.nodes["pad"]["attrs"].padding == ((2, 0), (1, 0))
    # F.pad(y, (1, 2, 3, 4)) -> H (3, 4), W (1, 2)
    assert g.nodes["pad_1"]["attrs"].padding == ((3, 4), (1, 2))
    assert g.nodes["reflect"]["attrs"].padding_mode == "reflect"


def test_slices_upsample_and_shuffle_attrs(many_ops_captures):
    g = many_ops_captures["Resizing"].graph
    assert g.nodes["getitem_1"]["attrs"].slices == ((2, None, 1), (1, None, 1))
    assert g.nodes["getitem_2"]["attrs"].slices == ((3, -4, 1), (1, -2, 1))
    up = g.nodes["up"]["attrs"]
    assert (up.scale, up.mode, up.align_corners) == ((2.0, 2.0), "bilinear", False)
    interp = g.nodes["interpolate"]["attrs"]
    assert interp.size == (16, 16) and interp.size_from == "x" and interp.mode == "nearest"
    assert g.nodes["shuffle"]["attrs"].factor == 2
    assert g.nodes["unshuffle"]["attrs"].factor == 2
    assert g.nodes["adaptive"]["attrs"].size == (5, None)
    assert g.nodes["cat"]["attrs"].axis == 1


def test_merges_need_two_activations(many_ops_captures):
    g = many_ops_captures["Resizing"].graph
    assert [g.nodes[n]["op"] for n in ("mul", "add", "sub")] == ["mul", "add", "sub"]
    assert g.nodes["mul"]["inputs"] == ("chunk", "getitem_5")


def test_head_attrs(many_ops_captures):
    g = many_ops_captures["Head"].graph
    assert g.nodes["mean"]["op"] == "global_pool"
    assert g.nodes["amax"]["op"] == "global_pool"
    assert g.nodes["amax"]["attrs"].extra == {"kind": "max", "keepdim": True}
    assert g.nodes["view"]["attrs"].target_shape == (None, -1)
    assert (g.nodes["flatten"]["attrs"].axis, g.nodes["flatten"]["attrs"].end_axis) == (1, -1)
    assert (g.nodes["fc"]["attrs"].in_features, g.nodes["fc"]["attrs"].out_features) == (16, 10)
    assert g.nodes["dropout"]["op"] == "pointwise"


def test_scalar_arithmetic_and_unknown_ops(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x):
        y = self.conv(x) * 0.5 + 1
        y = y * self.scale
        return torch.einsum("nchw->nhwc", y)
""")
    g = only(path, input_shapes=((1, 3, 8, 8),)).graph
    assert [g.nodes[n]["op"] for n in ("mul", "add", "mul_1")] == ["pointwise"] * 3
    einsum = g.nodes[node_by_origin(g, "torch.einsum")]
    assert einsum["op"] == "einsum" and einsum["shapes"] == ((1, 6, 6, 4),)
    assert einsum["attrs"].extra["equation"] == "nchw->nhwc"


def test_dict_and_none_returns_do_not_crash(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return {"out": self.conv(x), "aux": None, "pair": (x, 3)}
""")
    g = only(path, input_shapes=((1, 3, 8, 8),)).graph
    out = g.nodes["output"]
    assert set(out["inputs"]) == {"conv", "x"}


# ---------------------------------------------------------------------------------------------
# Shape errors
# ---------------------------------------------------------------------------------------------


def test_mismatched_cat_fails_at_that_node_and_later_nodes_are_unknown(tmp_path):
    path = write(tmp_path, """
class UNetish(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2)
        self.head = nn.Conv2d(7, 2, 1)

    def forward(self, x):
        y = self.up(self.down(x))
        y = torch.cat([y, x], dim=1)  # cat here
        y = self.head(y)
        return F.relu(y)
""")
    g = only(path, input_shapes=((1, 3, 56, 56),)).graph
    cat = g.nodes["cat"]
    assert cat["shapes"] is None
    assert cat["error"].startswith("Sizes of tensors must match except in dimension 1")
    assert "57" in cat["error"] and "56" in cat["error"] and "\n" not in cat["error"]
    assert cat["location"].line == line_of(path, "# cat here")
    assert g.nodes["up"]["shapes"] == ((1, 4, 57, 57),)
    for later in ("head", "relu", "output"):
        assert g.nodes[later]["shapes"] is None and g.nodes[later]["error"] is None


def test_kernel_larger_than_input_and_linear_mismatch_errors(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.big = nn.Conv2d(3, 4, 7)
        self.fc = nn.Linear(100, 2)

    def forward(self, x):
        a = self.big(x)
        b = self.fc(x.flatten(1))
        return a, b
""")
    g = only(path, input_shapes=((1, 3, 5, 5),)).graph
    assert "Kernel size can't be greater than actual input size" in g.nodes["big"]["error"]
    assert g.nodes["fc"]["error"] == (
        "mat1 and mat2 shapes cannot be multiplied (1x75 and 100x2): the input has 75 features "
        "but the layer expects in_features=100")
    assert g.nodes["flatten"]["shapes"] == ((1, 75),)


# ---------------------------------------------------------------------------------------------
# Cost: meta construction, huge inputs
# ---------------------------------------------------------------------------------------------


def test_large_model_is_built_on_meta_without_storage(tmp_path):
    path = write(tmp_path, """
class Big(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8192, 8192)  # 67M parameters

    def forward(self, x):
        return self.fc(x)
""")
    start = time.perf_counter()
    g = only(path).graph
    assert time.perf_counter() - start < 5
    module = g.graph["traced_module"]
    assert all(p.is_meta for p in module.parameters())
    assert g.nodes["fc"]["shapes"] == ((1, 8192),)


def test_huge_input_costs_the_same_as_a_small_one(tmp_path):
    path = write(tmp_path, LOCATED)
    start = time.perf_counter()
    g = only(path, input_shapes=((1, 3, 100000, 100000),)).graph
    assert time.perf_counter() - start < 10
    cat = g.nodes[node_by_origin(g, "torch.cat")]
    assert cat["shapes"] == ((1, 16, 200000, 200000),)


def test_user_instance_keeps_its_weights_and_training_mode():
    net = _LocatedNet()
    net.train()
    before = net.convs[0].weight.detach().clone()
    c = frontend.capture_module(net, (1, 3, 8, 8), Options())
    assert c.graph.nodes["convs_1"]["shapes"] == ((1, 4, 8, 8),)
    assert net.training and all(m.training for m in net.modules())
    assert not net.convs[0].weight.is_meta
    assert torch.equal(net.convs[0].weight, before)


def test_capture_module_rejects_non_modules():
    with pytest.raises(TargetError, match="got int"):
        frontend.capture_module(3, None, Options())


# ---------------------------------------------------------------------------------------------
# Models fx cannot trace
# ---------------------------------------------------------------------------------------------


def test_shape_dependent_control_flow_is_captured_eagerly(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if y.shape[-1] % 2:
            y = F.pad(y, (0, 1, 0, 1))  # pad line
        return torch.cat([self.conv2(y), y], 1)  # cat line
""")
    c = only(path, input_shapes=((1, 3, 64, 64),))
    g = c.graph
    assert any("torch.fx could not trace" in n for n in c.notes)
    assert g.graph["capture_note"] is None
    pad = g.nodes[node_by_origin(g, "F.pad")]
    assert pad["op"] == "pad" and pad["shapes"] == ((1, 8, 32, 32),)
    assert pad["attrs"].padding == ((0, 1), (0, 1))
    assert pad["location"].line == line_of(path, "# pad line")
    cat = g.nodes[node_by_origin(g, "torch.cat")]
    assert cat["op"] == "concat" and cat["shapes"] == ((1, 16, 32, 32),)
    assert cat["location"].line == line_of(path, "# cat line")
    assert g.nodes["conv2"]["location"].line == line_of(path, "self.conv2 = ")
    model = g.graph["module_factory"]().eval()
    assert tuple(model(torch.randn(1, 3, 64, 64)).shape) == cat["shapes"][0]
    assert list(ops(g))[-1] == "output"
    assert g.nodes["output"]["inputs"] == (node_by_origin(g, "torch.cat"),)


def test_value_dependent_control_flow_stops_with_a_note(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # data dependent
            y = y * 2
        return y
""")
    c = only(path, input_shapes=((1, 3, 16, 16),))
    assert c.error is None
    note = c.graph.graph["capture_note"]
    assert f"capture stopped at {path}:{line_of(path, '# data dependent')}" in note
    assert note in c.notes
    assert c.graph.nodes["conv"]["shapes"] == ((1, 8, 14, 14),)


def test_shape_error_in_eager_capture_is_located(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2)

    def forward(self, x):
        y = self.conv(x)
        for _ in range(int(y.shape[-1] > 0)):
            y = torch.cat([y, x], 1)  # bad cat
        return y
""")
    c = only(path, input_shapes=((1, 3, 16, 16),))
    g = c.graph
    cat = g.nodes[node_by_origin(g, "torch.cat")]
    assert cat["error"].startswith("Sizes of tensors must match")
    assert cat["location"].line == line_of(path, "# bad cat")
    assert "capture stopped at" in g.graph["capture_note"]


def test_op_without_a_meta_kernel_is_unknown_not_an_error(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        idx = y.nonzero()  # no meta kernel
        return y, idx.float() * 2
""")
    c = only(path, input_shapes=((1, 3, 8, 8),))
    g = c.graph
    assert g.nodes["conv"]["shapes"] == ((1, 4, 6, 6),)
    assert g.nodes["nonzero"]["shapes"] is None and g.nodes["nonzero"]["error"] is None
    assert g.nodes["float_1"]["shapes"] is None and g.nodes["float_1"]["error"] is None
    note = g.graph["capture_note"]
    assert note.startswith("shapes unknown from nonzero")
    assert f":{line_of(path, '# no meta')}" in note
    assert note in c.notes


def test_timeout_interrupts_a_hanging_import(tmp_path):
    path = write(tmp_path, "import time\nwhile True:\n    time.sleep(0.01)\n")
    start = time.perf_counter()
    with pytest.raises(TargetError, match=r"timed out after 0\.3s"):
        capture(path, timeout=0.3)
    assert time.perf_counter() - start < 3
    assert nn.Module.__init__.__qualname__ == "Module.__init__"  # the recorder was undone


def test_size_from_only_when_the_size_is_that_tensors_size(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 3, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.down(x)
        same = F.interpolate(y, size=(x.size(2), x.size(3)))
        double = F.interpolate(y, size=(y.shape[2] * 2, y.shape[3] * 2))
        return same + double
""")
    g = only(path, input_shapes=((1, 3, 16, 16),)).graph
    assert g.nodes["interpolate"]["attrs"].size_from == "x"
    assert g.nodes["interpolate_1"]["attrs"].size == (16, 16)
    assert g.nodes["interpolate_1"]["attrs"].size_from is None


def test_real_weight_instance_with_batchnorm_runs_on_meta(tmp_path):
    path = write(tmp_path, """
model = nn.Sequential(
    nn.Conv2d(3, 8, 3, padding=1),
    nn.BatchNorm2d(8),  # bn line
    nn.ReLU(),
    nn.Flatten(),
    nn.Linear(8 * 4 * 4, 2),
)
example_input = torch.randn(1, 3, 4, 4)
""")
    c = only(path)
    g = c.graph
    assert g.graph["module"] is g.graph["traced_module"]
    assert not next(g.graph["module"].parameters()).is_meta
    assert g.nodes["_1"]["op"] == "norm"
    assert g.nodes["_1"]["location"].line == line_of(path, "# bn line")
    assert g.nodes["_4"]["shapes"] == ((1, 2),)


# ---------------------------------------------------------------------------------------------
# The AST pre-filter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("import torch.nn as nn\nclass Net(nn.Module):\n    pass\n", True),
        ("from torch import nn\nmodel = nn.Sequential(nn.Linear(2, 2))\n", True),
        ("from lightning import LightningModule\nclass M(LightningModule): pass\n", True),
        ("import torch\nfrom base import BaseNet\nclass Net(BaseNet): pass\n", True),
        ("import torch\nif True:\n    net = build()\n", True),
        ("from .layers import Block\nmodel = Block()\n", True),
        ("import torch\ndef make():\n    class Net(torch.nn.Module): pass\n", True),
        ("def f(:\n  torch\n", True),
        ("import torch\ndef helper(x):\n    return torch.relu(x)\n", False),
        ("import torch\nclass Mode(Enum):\n    A = 1\nSCALE = 2\n", False),
        ("import os\nprint(os.getcwd())\n", False),
        ("class Foo(Exception):\n    pass\n", False),
        ("import numpy as np\nclass Config(dict):\n    'not a Module'\nx = np.zeros(3)\n", False),
    ],
)
def test_defines_models(text, expected):
    assert defines_models(text) is expected


def test_defines_models_parses_at_most_once(monkeypatch):
    """The pre-filter's cost: one parse for a file that mentions imports, none for a file that
    cannot hold a model (its speed is measured in bench/startup.py, not timed here)."""
    import archlint.frontends.source as source

    parses = []
    real_parse = source.ast.parse
    monkeypatch.setattr(source.ast, "parse", lambda *a, **k: parses.append(1) or real_parse(*a, **k))
    assert not defines_models("import os\n" + "def f(x):\n    return x + 1\n" * 20)
    assert len(parses) == 1
    assert not defines_models("def f(x):\n    return x + 1\n" * 20)
    assert len(parses) == 1


def test_abstract_base_classes_are_not_models(tmp_path):
    path = write(tmp_path, """
class Base(nn.Module):
    def forward(self, x):
        '''Subclasses compute the features.'''
        raise NotImplementedError


class Stub(nn.Module):
    def forward(self, x):
        ...


class Net(Base):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)
""")
    assert [c.name for c in capture(path)] == ["Net"]


def test_graph_module_runs_on_real_weights_with_the_same_names(many_ops_captures):
    g = many_ops_captures["Windows"].graph
    gm = g.graph["graph_module"]
    real = g.graph["module_factory"]().eval()
    rebound = fx.GraphModule(real, copy.deepcopy(gm.graph))
    x = torch.randn(REAL_SIZES["Windows"])
    assert torch.equal(rebound(x), real(x))
    assert set(g.graph["fx_names"]) <= {n.name for n in gm.graph.nodes}


def _window_out(length, kernel, stride, pads, dilation, ceil_mode):
    """PyTorch's output length of a conv/pool window (with the ceil_mode last-window rule)."""
    span = length + pads[0] + pads[1] - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= length + pads[0]:
        out -= 1
    return out


@pytest.mark.parametrize(
    "layer",
    [
        nn.Conv2d(2, 2, 4, padding="same"),
        nn.Conv2d(2, 2, (3, 6), padding="same", dilation=(2, 3)),
        nn.Conv2d(2, 2, 5, stride=3, padding=(2, 1), dilation=2),
        nn.Conv1d(2, 2, 4, stride=2, padding=3),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.MaxPool2d((2, 3), dilation=2, ceil_mode=True),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.AvgPool1d(4, ceil_mode=True),
        nn.MaxPool3d(2, stride=2),
    ],
    ids=repr,
)
@pytest.mark.parametrize("size", [13, 16])
def test_window_attrs_reproduce_pytorch_output_sizes(layer, size):
    nd = int(type(layer).__name__[-2])  # Conv2d -> 2
    shape = (1, 2) + (size,) * nd
    c = frontend.capture_module(nn.Sequential(layer), shape, Options())
    node = c.graph.nodes["_0"]
    a = node["attrs"]
    real = tuple(layer(torch.randn(shape)).shape[2:])
    predicted = tuple(
        _window_out(size, a.kernel[i], a.stride[i], a.padding[i],
                    a.dilation[i] if a.dilation else 1, a.ceil_mode)
        for i in range(nd)
    )
    assert predicted == real == node["shapes"][0][2:]


@pytest.mark.parametrize(
    "layer",
    [
        nn.ConvTranspose2d(2, 2, 3, stride=2, padding=1, output_padding=1),
        nn.ConvTranspose2d(2, 2, (4, 3), stride=(2, 3), padding=(1, 0), dilation=2),
        nn.ConvTranspose1d(2, 2, 5, stride=3, output_padding=2, dilation=1),
    ],
    ids=repr,
)
def test_transposed_attrs_reproduce_pytorch_output_sizes(layer):
    nd = len(layer.kernel_size)
    shape = (1, 2) + (7,) * nd
    c = frontend.capture_module(nn.Sequential(layer), shape, Options())
    a = c.graph.nodes["_0"]["attrs"]
    real = tuple(layer(torch.randn(shape)).shape[2:])
    predicted = tuple(
        (7 - 1) * a.stride[i] - sum(a.padding[i]) + a.dilation[i] * (a.kernel[i] - 1)
        + a.output_padding[i] + 1
        for i in range(nd)
    )
    assert predicted == real == c.graph.nodes["_0"]["shapes"][0][2:]


def test_losses_and_weightless_helpers_are_not_models(tmp_path):
    path = write(tmp_path, """
class DiceLoss(nn.Module):
    def forward(self, pred, target):
        return (pred - target).abs().mean()


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x)
""")
    assert [c.name for c in capture(path)] == ["Net"]
    with_instances = write(tmp_path, """
criterion = nn.CrossEntropyLoss()
act = nn.ReLU()
model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
""", "instances.py")
    assert [c.name for c in capture(with_instances)] == ["model"]
    # a loss can still be named explicitly
    explicit = only(path, model="DiceLoss", input_shapes=((1, 4), (1, 4)))
    assert explicit.error is None and explicit.graph.nodes["sub"]["op"] == "sub"


def test_each_target_imports_its_own_siblings(tmp_path):
    paths = []
    for width in (4, 6):
        folder = tmp_path / f"project{width}"
        folder.mkdir()
        (folder / "archlint_test_layers.py").write_text(HEADER + f"WIDTH = {width}\n")
        paths.append(write(folder, """
from archlint_test_layers import WIDTH

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, WIDTH, 1)

    def forward(self, x):
        return self.conv(x)
"""))
    widths = [only(p, input_shapes=((1, 3, 4, 4),)).graph.nodes["conv"]["shapes"][0][1]
              for p in paths]
    assert widths == [4, 6]
    assert "archlint_test_layers" not in sys.modules


class _Apply(nn.Module):
    """A one-function model for parity cases: ``forward(x) = fn(self, x)``."""

    def __init__(self, fn, **layers):
        super().__init__()
        self.fn = fn
        for name, layer in layers.items():
            self.add_module(name, layer)

    def forward(self, x):
        return self.fn(self, x)


PARITY_CASES = {
    "conv channels": (nn.Sequential(nn.Conv2d(3, 4, 3)), (1, 4, 8, 8)),
    "grouped conv channels": (nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)), (1, 6, 8, 8)),
    "transposed conv channels": (nn.Sequential(nn.ConvTranspose2d(3, 4, 3)), (1, 4, 8, 8)),
    "output_padding 2d": (nn.Sequential(nn.ConvTranspose2d(3, 3, 3, 2, output_padding=2)),
                          (1, 3, 4, 4)),
    "output_padding 1d": (nn.Sequential(nn.ConvTranspose1d(3, 3, 1, output_padding=1)),
                          (1, 3, 4)),
    "output_padding 3d": (nn.Sequential(nn.ConvTranspose3d(2, 2, 1, output_padding=1)),
                          (1, 2, 3, 3, 3)),
    "functional output_padding": (
        _Apply(lambda self, x: F.conv_transpose2d(x, self.w.weight, stride=1, output_padding=1),
               w=nn.Conv2d(3, 3, 3)), (1, 3, 5, 5)),
    "linear": (nn.Sequential(nn.Linear(5, 2)), (2, 3, 4)),
    "pixel_shuffle": (nn.Sequential(nn.PixelShuffle(2)), (1, 3, 4, 4)),
    "pixel_unshuffle": (nn.Sequential(nn.PixelUnshuffle(2)), (1, 4, 4, 5)),
    "layer_norm": (nn.Sequential(nn.LayerNorm(5)), (1, 3, 4, 4)),
    "broadcast add": (_Apply(lambda self, x: x + x[:, :, 1:]), (1, 3, 4, 4)),
    "broadcast mul": (_Apply(lambda self, x: x[:, :2] * x[:, :, :, :3]), (1, 3, 4, 4)),
    "empty adaptive pool": (_Apply(lambda self, x: F.adaptive_avg_pool2d(x[:, :, 9:], 2)),
                            (1, 3, 4, 4)),
    "cat": (_Apply(lambda self, x: torch.cat([x, x[:, :, 1:]], 1)), (1, 3, 4, 4)),
}


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_errors_match_a_real_cpu_run(case):
    model, shape = PARITY_CASES[case]
    model.eval()
    with pytest.raises(Exception) as real:
        model(torch.randn(shape))
    expected = str(real.value).splitlines()[0]
    c = frontend.capture_module(model, shape, Options())
    assert c.error is None
    errors = [c.graph.nodes[n]["error"] for n in ops(c.graph) if c.graph.nodes[n]["error"]]
    assert len(errors) == 1, errors
    assert errors[0] == expected or errors[0].startswith(expected + ": ")


class _OuterAlarm(BaseException):
    pass


def test_timeout_cooperates_with_a_callers_alarm(tmp_path):
    import signal

    path = write(tmp_path, "import time\nwhile True:\n    time.sleep(0.01)\n")

    def outer(signum, frame):
        raise _OuterAlarm()

    previous = signal.signal(signal.SIGALRM, outer)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)  # the caller's limit is the shorter one
        with pytest.raises(_OuterAlarm):
            capture(path, timeout=5)
        signal.setitimer(signal.ITIMER_REAL, 30)  # ours is the shorter one; theirs survives
        with pytest.raises(TargetError, match=r"timed out after 0\.3s"):
            capture(path, timeout=0.3)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 25 < left < 30
        assert signal.getsignal(signal.SIGALRM) is outer
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_transposed_conv_output_size_from_a_skip_is_recorded(tmp_path):
    path = write(tmp_path, """
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 3, 3, stride=2, padding=1)

    def forward(self, x):
        return self.up(self.down(x), output_size=x.shape[2:]) + x

example_input = torch.empty(1, 3, 24, 24, device="meta")
""")
    g = only(path).graph
    attrs = g.nodes["up"]["attrs"]
    assert attrs.size_from == "x"
    assert attrs.extra["output_size"] == (24, 24)
    assert g.nodes["up"]["shapes"][0][2:] == (24, 24)  # 12 -> 23 or 24: the skip picks 24
