"""Random CNN architectures for differential tests, written as real ``.py`` model files.

A hypothesis strategy draws an :class:`Arch`: a list of blocks (convs, pools, transposed convs,
upsampling, residual blocks with projection shortcuts, U-Net-style concat skips) and an optional
head (global pooling, or a flatten + Linear whose ``in_features`` is computed from PyTorch's real
trunk output, sometimes deliberately off). :func:`render` turns it into the source of a model file
the way a user writes one: every layer is an attribute set in ``__init__`` on its own line, merges
are ``+`` and ``torch.cat`` in ``forward``, and ``example_input`` sets the input size.

Nothing here judges a model: PyTorch's real forward is the truth (see test_differential.py), so the
generator freely produces models that raise (pool padding above half the kernel, an
``output_padding`` too large, ``padding='same'`` with a stride, a collapsed map, mismatched skips).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

MODEL_CLASS = "Generated"
#: Error-severity rules whose claim is about what the output looks like, not that the forward
#: fails or broadcasts: a real run cannot confirm or refute them (a transposed conv with
#: kernel < stride runs, but leaves output pixels that no input reaches).
NOT_RUNTIME_ERRORS = frozenset({"kernel-stride-checkerboard"})
HEAD_OUT = 5


@dataclass
class Block:
    """One block: its ``__init__`` lines (``name = ctor``) and ``forward`` lines, with the
    channel count it leaves. ``{x}`` in forward lines is the running activation."""

    layers: list[tuple[str, str]]
    forward: list[str]
    out_channels: int


@dataclass
class Head:
    kind: str  # "global", "adaptive", "flatten", "view"
    #: flatten heads: added to the true in_features (0 = right at the example size).
    features_delta: int = 0
    adaptive_size: tuple[int, int] = (1, 1)


@dataclass
class Arch:
    in_channels: int
    height: int
    width: int
    blocks: list[Block] = field(default_factory=list)
    head: Head | None = None

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (1, self.in_channels, self.height, self.width)

    @property
    def trunk_channels(self) -> int:
        return self.blocks[-1].out_channels if self.blocks else self.in_channels


# ---------------------------------------------------------------------------------------------
# rendering


def render(arch: Arch, trunk_features: int | None = None, *, with_head: bool = True) -> str:
    """The model file's source. ``trunk_features`` is the real flattened size of the trunk's
    output at the example size (flatten heads need it; None renders a placeholder 16)."""
    init: list[str] = []
    forward: list[str] = []
    counter = 0
    for block in arch.blocks:
        names = {}
        for key, ctor in block.layers:
            names[key] = f"l{counter}"
            counter += 1
            init.append(f"self.{names[key]} = {ctor}")
        for line in block.forward:
            forward.append(line.format(**{k: f"self.{v}" for k, v in names.items()}))
    if with_head and arch.head is not None:
        head_init, head_forward = _render_head(arch, trunk_features)
        init.extend(head_init)
        forward.extend(head_forward)
    body_init = "\n".join("        " + line for line in init) or "        pass"
    body_forward = "\n".join("        " + line for line in forward)
    return (
        "import torch\n"
        "import torch.nn as nn\n"
        "import torch.nn.functional as F\n"
        "\n"
        "\n"
        f"class {MODEL_CLASS}(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        f"{body_init}\n"
        "\n"
        "    def forward(self, x):\n"
        f"{body_forward}\n"
        "        return x\n"
        "\n"
        "\n"
        f"example_input = torch.zeros{arch.input_shape}\n"
    )


def _render_head(arch: Arch, trunk_features: int | None) -> tuple[list[str], list[str]]:
    head = arch.head
    c = arch.trunk_channels
    if head.kind == "global":
        return (
            ["self.pool = nn.AdaptiveAvgPool2d(1)", f"self.fc = nn.Linear({c}, {HEAD_OUT})"],
            ["x = self.fc(torch.flatten(self.pool(x), 1))"],
        )
    if head.kind == "adaptive":
        h, w = head.adaptive_size
        return (
            [f"self.pool = nn.AdaptiveAvgPool2d(({h}, {w}))",
             f"self.fc = nn.Linear({c * h * w}, {HEAD_OUT})"],
            ["x = self.fc(torch.flatten(self.pool(x), 1))"],
        )
    features = max(1, (trunk_features if trunk_features is not None else 16) + head.features_delta)
    flatten = "torch.flatten(x, 1)" if head.kind == "flatten" else "x.view(x.size(0), -1)"
    return ([f"self.fc = nn.Linear({features}, {HEAD_OUT})"], [f"x = self.fc({flatten})"])


# ---------------------------------------------------------------------------------------------
# strategies

channels = st.integers(1, 4)


@st.composite
def conv_args(draw, *, allow_same: bool = True) -> tuple[str, int]:
    """Conv2d keyword arguments (kernel 1-7, stride 1-3, padding 0..k, dilation 1-3) and the
    kernel's largest dilated extent (to keep most models from collapsing)."""
    k = draw(st.integers(1, 7))
    kw = draw(st.one_of(st.just(k), st.integers(1, 7))) if draw(st.booleans()) else k
    s = draw(st.sampled_from([1, 1, 2, 2, 3]))
    d = draw(st.sampled_from([1, 1, 1, 2, 3]))
    kernel = str(k) if kw == k else f"({k}, {kw})"
    choice = draw(st.integers(0, 9))
    if allow_same and choice == 0:
        padding = "'same'"  # PyTorch raises at construction when the stride is not 1
    elif choice <= 4:
        padding = str(d * (k - 1) // 2) if kw == k else f"({d * (k - 1) // 2}, {d * (kw - 1) // 2})"
    else:
        padding = str(draw(st.integers(0, k)))
    extra = ""
    if draw(st.integers(0, 9)) == 0:
        extra = f", padding_mode={draw(st.sampled_from(['reflect', 'replicate', 'circular']))!r}"
    return f"kernel_size={kernel}, stride={s}, padding={padding}, dilation={d}{extra}", s


@st.composite
def conv_block(draw, c: int) -> Block:
    out = draw(channels)
    args, _ = draw(conv_args())
    layers = [("conv", f"nn.Conv2d({c}, {out}, {args})")]
    forward = ["x = {conv}(x)"]
    if draw(st.integers(0, 3)) == 0:
        act = draw(st.sampled_from(["nn.ReLU()", f"nn.BatchNorm2d({out})", "nn.LeakyReLU(0.1)"]))
        layers.append(("act", act))
        forward.append("x = {act}(x)")
    if draw(st.integers(0, 6)) == 0:
        # a Sequential gives dotted qualnames (l3.0, l3.1)
        inner = ", ".join(ctor for _, ctor in layers)
        return Block([("seq", f"nn.Sequential({inner})")], ["x = {seq}(x)"], out)
    return Block(layers, forward, out)


@st.composite
def pool_block(draw, c: int) -> Block:
    kind = draw(st.sampled_from(["max", "avg"]))
    k = draw(st.integers(1, 4))
    s = draw(st.sampled_from([None, 1, 2, 2, 3]))
    # PyTorch wants pad <= kernel // 2; go one past it now and then and let PyTorch raise
    p = draw(st.integers(0, k // 2 + (1 if draw(st.integers(0, 7)) == 0 else 0)))
    ceil = draw(st.booleans())
    stride = "None" if s is None else str(s)
    if kind == "max":
        d = draw(st.sampled_from([1, 1, 1, 2]))
        ctor = f"nn.MaxPool2d({k}, stride={stride}, padding={p}, dilation={d}, ceil_mode={ceil})"
    else:
        cip = draw(st.booleans())
        ctor = (f"nn.AvgPool2d({k}, stride={stride}, padding={p}, ceil_mode={ceil}, "
                f"count_include_pad={cip})")
    return Block([("pool", ctor)], ["x = {pool}(x)"], c)


@st.composite
def conv_transpose_block(draw, c: int) -> Block:
    out = draw(channels)
    k = draw(st.integers(1, 5))
    s = draw(st.integers(1, 3))
    d = draw(st.sampled_from([1, 1, 2]))
    p = draw(st.integers(0, k - 1))
    limit = max(s, d)
    # output_padding must be < max(stride, dilation); test the boundary now and then
    op = draw(st.integers(0, limit if draw(st.integers(0, 7)) == 0 else limit - 1))
    ctor = (f"nn.ConvTranspose2d({c}, {out}, kernel_size={k}, stride={s}, padding={p}, "
            f"output_padding={op}, dilation={d})")
    return Block([("up", ctor)], ["x = {up}(x)"], out)


@st.composite
def upsample_block(draw, c: int) -> Block:
    mode = draw(st.sampled_from(["nearest", "bilinear"]))
    align = ", align_corners=False" if mode == "bilinear" else ""
    how = draw(st.sampled_from(["scale", "size", "functional"]))
    if how == "scale":
        ctor = f"nn.Upsample(scale_factor=2, mode={mode!r}{align})"
    elif how == "size":
        h, w = draw(st.integers(4, 32)), draw(st.integers(4, 32))
        ctor = f"nn.Upsample(size=({h}, {w}), mode={mode!r}{align})"
    else:
        return Block([], [f"x = F.interpolate(x, scale_factor=2, mode={mode!r}{align})"], c)
    return Block([("up", ctor)], ["x = {up}(x)"], c)


@st.composite
def residual_block(draw, c: int) -> Block:
    """``x = main(x) + shortcut(x)``; the shortcut is the identity or a strided projection."""
    out = draw(channels)
    args, s = draw(conv_args(allow_same=False))
    layers = [("main", f"nn.Conv2d({c}, {out}, {args})")]
    forward = ["y = {main}(x)"]
    if draw(st.booleans()):
        args2, _ = draw(conv_args(allow_same=False).filter(lambda a: "stride=1" in a[0]))
        layers.append(("main2", f"nn.Conv2d({out}, {out}, {args2})"))
        forward.append("y = {main2}(torch.relu(y))")
    if s == 1 and out == c and draw(st.booleans()):
        forward.append("x = y + x")
    else:
        pk = draw(st.sampled_from([1, 1, 3]))
        layers.append(("proj", f"nn.Conv2d({c}, {out}, {pk}, stride={s}, padding={pk // 2})"))
        forward.append(draw(st.sampled_from(["x = y + {proj}(x)", "x = {proj}(x) + y"])))
    return Block(layers, forward, out)


@st.composite
def unet_block(draw, c: int) -> Block:
    """``skip = x``; down, an optional inner conv, up; ``torch.cat`` with the skip."""
    layers, forward = [], ["skip = x"]
    down = draw(st.sampled_from(["pool", "conv3s2", "conv"]))
    if down == "pool":
        layers.append(("down", "nn.MaxPool2d(2)"))
    elif down == "conv3s2":
        layers.append(("down", f"nn.Conv2d({c}, {c}, 3, stride=2, padding=1)"))
    else:
        args, _ = draw(conv_args(allow_same=False))
        layers.append(("down", f"nn.Conv2d({c}, {c}, {args})"))
    forward.append("x = {down}(x)")
    if draw(st.booleans()):
        layers.append(("inner", f"nn.Conv2d({c}, {c}, 3, padding=1)"))
        forward.append("x = {inner}(x)")
    up = draw(st.sampled_from(["upsample", "convT2", "convT3", "interp_size"]))
    if up == "upsample":
        layers.append(("up", "nn.Upsample(scale_factor=2, mode='nearest')"))
        forward.append("x = {up}(x)")
    elif up == "convT2":
        layers.append(("up", f"nn.ConvTranspose2d({c}, {c}, 2, stride=2)"))
        forward.append("x = {up}(x)")
    elif up == "convT3":
        layers.append(("up", f"nn.ConvTranspose2d({c}, {c}, 3, stride=2, padding=1, output_padding=1)"))
        forward.append("x = {up}(x)")
    else:
        forward.append("x = F.interpolate(x, size=skip.shape[2:], mode='nearest')")
    forward.append(draw(st.sampled_from(["x = torch.cat([x, skip], dim=1)",
                                         "x = torch.cat((skip, x), 1)"])))
    return Block(layers, forward, 2 * c)


_BLOCKS = {
    "conv": conv_block,
    "pool": pool_block,
    "conv_transpose": conv_transpose_block,
    "upsample": upsample_block,
    "residual": residual_block,
    "unet": unet_block,
}
_WEIGHTS = ["conv"] * 3 + ["pool"] * 2 + ["conv_transpose", "upsample"] + ["residual"] * 2 + ["unet"] * 2


@st.composite
def heads(draw) -> Head | None:
    kind = draw(st.sampled_from([None, None, "global", "adaptive", "flatten", "flatten", "view"]))
    if kind is None:
        return None
    if kind == "adaptive":
        return Head(kind, adaptive_size=(draw(st.integers(1, 3)), draw(st.integers(1, 3))))
    if kind in ("flatten", "view"):
        # mostly right at the example size; now and then off, as a hard-coded number goes stale
        delta = draw(st.sampled_from([0, 0, 0, 1, -1, 7]))
        return Head(kind, features_delta=delta)
    return Head(kind)


@st.composite
def architectures(draw, max_blocks: int = 4) -> Arch:
    in_channels = draw(st.integers(1, 3))
    height = draw(st.integers(8, 64))
    width = height if draw(st.booleans()) else draw(st.integers(8, 64))
    arch = Arch(in_channels, height, width)
    c = in_channels
    for _ in range(draw(st.integers(1, max_blocks))):
        block = draw(_BLOCKS[draw(st.sampled_from(_WEIGHTS))](c))
        arch.blocks.append(block)
        c = block.out_channels
    arch.head = draw(heads())
    return arch


# ---------------------------------------------------------------------------------------------
# the truth: PyTorch's real forward


@dataclass
class RealRun:
    """What PyTorch really did with a model at one input shape."""

    #: one line: the exception PyTorch raised (construction or forward), else None.
    error: str | None = None
    #: a merge that silently broadcast mismatched spatial sizes, else None.
    broadcast: str | None = None
    #: output shapes of every module call, by qualname, in call order.
    module_shapes: dict[str, list[tuple[int, ...]]] = field(default_factory=dict)
    #: ('add' | 'concat' | 'upsample', output shape) of every functional merge/resize, in order.
    functional: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    output: tuple[int, ...] | None = None

    @property
    def fails(self) -> bool:
        return self.error is not None or self.broadcast is not None


def load_module(path, name: str):
    """Import a model file under a unique module name."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _merge_recorder(run: RealRun):
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    adds = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}

    class MergeRecorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if func in adds:
                shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
                if len({s[2:] for s in shapes}) > 1 and run.broadcast is None:
                    run.broadcast = f"add broadcast {shapes[0]} with {shapes[1]}"
                run.functional.append(("add", tuple(out.shape)))
            elif func is torch.cat:
                run.functional.append(("concat", tuple(out.shape)))
            elif func is F.interpolate:
                run.functional.append(("upsample", tuple(out.shape)))
            return out

    return MergeRecorder()


def build(model_class):
    """``(model, None)`` in eval mode, or ``(None, reason)`` when the constructor raises."""
    try:
        return model_class().eval(), None
    except Exception as exc:  # the truth includes constructors that raise
        return None, f"construction: {type(exc).__name__}: {exc}".splitlines()[0]


def real_run(model_class, shape: tuple[int, ...], model=None) -> RealRun:
    """Run ``model`` (else a fresh ``model_class()``) on zeros of ``shape`` (eval, no grad)."""
    import torch

    run = RealRun()
    if model is None:
        model, run.error = build(model_class)
        if model is None:
            return run

    def hook(qualname):
        def record(module, args, output):
            if isinstance(output, torch.Tensor):
                run.module_shapes.setdefault(qualname, []).append(tuple(output.shape))
        return record

    handles = [m.register_forward_hook(hook(q)) for q, m in model.named_modules() if q]
    try:
        with torch.no_grad(), _merge_recorder(run):
            out = model(torch.zeros(shape))
        run.output = tuple(out.shape)
    except Exception as exc:
        run.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    finally:
        for h in handles:
            h.remove()
    return run


def leaf_qualnames(model) -> set[str]:
    """Qualnames of the modules without children (the layers the graph must show)."""
    return {q for q, m in model.named_modules() if q and not any(True for _ in m.children())}


def write_model(arch: Arch, folder, name: str = "model"):
    """Write ``arch`` as ``folder/name.py``, with a flatten head's ``in_features`` taken from
    PyTorch's real trunk output (plus the head's deliberate error). Returns the path."""
    from pathlib import Path

    folder = Path(folder)
    trunk_features = None
    if arch.head is not None and arch.head.kind in ("flatten", "view"):
        trunk_path = folder / f"{name}_trunk.py"
        trunk_path.write_text(render(arch, with_head=False))
        trunk = load_module(trunk_path, f"_archgen_trunk_{id(arch)}_{name}")
        run = real_run(getattr(trunk, MODEL_CLASS), arch.input_shape)
        trunk_path.unlink()
        if run.output is not None:
            c, h, w = run.output[1:]
            trunk_features = c * h * w
    path = folder / f"{name}.py"
    path.write_text(render(arch, trunk_features))
    return path
