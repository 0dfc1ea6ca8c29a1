"""
## What it does
Flags `padding='same'` on a convolution with stride > 1. PyTorch refuses to build such a layer
("padding='same' is not supported for strided convolutions"), so the model cannot even be
constructed; this rule reads the source, finds the call (`nn.Conv1d/2d/3d`, `nn.LazyConv*d`,
`F.conv1d/2d/3d`, whatever the argument order or spelling, including a stride passed in by a
helper's caller) and points at its line.

For ONNX models it flags `auto_pad=SAME_UPPER`/`SAME_LOWER` with a stride > 1 as a warning: the
layer is legal, but its padding is asymmetric at some input sizes and changes with the input size,
which no PyTorch `Conv2d(padding=...)` reproduces. The finding spells out the begin/end pads and
the explicit equivalent.

## Why is this bad?
With stride `s`, "same" cannot mean "output = input"; TensorFlow defines it as `ceil(n / s)` with
the odd padding pixel at the end, PyTorch declines to guess. Code ported from TensorFlow/Keras
crashes at construction, and an ONNX model exported from TensorFlow keeps a one-pixel shift that
an explicit symmetric port silently loses.

## Example
```python
self.down = nn.Conv2d(64, 128, kernel_size=3, stride=2, padding="same")   # ValueError
```

## Use instead
```python
self.down = nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1)   # ceil(n / 2), symmetric
# exact TensorFlow SAME on even inputs: x = F.pad(x, (0, 1, 0, 1)); conv with padding=0
```
`archlint --fix --unsafe-fixes` makes the first edit on `nn.Conv*d` calls whose kernel, stride and
dilation are literals (unsafe: symmetric, where TensorFlow's SAME pads one more pixel at the end).

## References
- PyTorch docs, `nn.Conv2d`: "padding='same' doesn't support any stride values other than 1".
- ONNX operator docs, `Conv`: `auto_pad` SAME_UPPER / SAME_LOWER.
- TensorFlow docs, `tf.nn.convolution`: the SAME padding formula.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

from archlint.graph import Location, output_shape, spatial
from archlint.fixes import Applicability, per_axis, source_fix
from archlint.rule import rule

#: Positions of stride, padding, kernel_size, dilation in the positional signature.
SIGNATURES = {
    **{f"Conv{n}d": {"kernel_size": 2, "stride": 3, "padding": 4, "dilation": 5} for n in (1, 2, 3)},
    **{f"LazyConv{n}d": {"kernel_size": 1, "stride": 2, "padding": 3, "dilation": 4} for n in (1, 2, 3)},
    **{f"conv{n}d": {"weight": 1, "stride": 3, "padding": 4, "dilation": 5} for n in (1, 2, 3)},
}
WINDOWED = ("conv", "max_pool", "avg_pool", "lp_pool")
#: ``--fix --unsafe-fixes`` replaces padding='same' with the explicit padding at the layer's
#: construction call. Unsafe: symmetric padding, where TensorFlow's SAME pads one more pixel at
#: the end when the span is odd, so ported weights see a shifted map.
FIX_APPLICABILITY = Applicability.UNSAFE


@dataclass(frozen=True)
class StridedSame:
    call: ast.Call
    callee: str
    stride: tuple[int, ...]
    kernel: tuple[int, ...] | None
    dilation: tuple[int, ...]
    scope: str
    via: str | None  # where the stride came from when a helper's caller passed it


@rule(
    id="same-padding-stride",
    code="AL105",
    severity="error",
    summary="padding='same' (or ONNX auto_pad SAME_*) with stride > 1",
    reads_source=True,
)
def same_padding_stride(ctx):
    if ctx.frontend == "onnx":
        yield from _onnx_auto_pad(ctx)
        return
    if ctx.source is None or ctx.source.tree is None:
        return
    for found in strided_same_calls(ctx.source.tree):
        yield ctx.finding(
            Location(str(ctx.source.path), found.call.lineno, found.scope),
            _message(found),
            fix=_fix(found),
            autofix=_autofix(found, Location(str(ctx.source.path), found.call.lineno, found.scope)),
        )


# ---------------------------------------------------------------------------------------------
# Source (torch)


def strided_same_calls(tree: ast.Module) -> list[StridedSame]:
    """Every torch conv call in ``tree`` with padding='same' and a stride > 1."""
    bound = _torch_names(tree)
    constants = _module_constants(tree)
    found = []
    for scope, func, call in _calls_with_scope(tree):
        callee = _torch_callee(call.func, bound)
        if callee is None:
            continue
        signature = SIGNATURES[callee]
        padding = _argument(call, "padding", signature)
        if not (isinstance(padding, ast.Constant) and padding.value == "same"):
            continue
        stride_node = _argument(call, "stride", signature)
        if stride_node is None:
            continue
        stride, via = _resolve_stride(stride_node, func, tree, constants)
        if stride is None or all(s <= 1 for s in stride):
            continue
        kernel = _ints(_argument(call, "kernel_size", signature), constants) if "kernel_size" in signature else None
        dilation = _ints(_argument(call, "dilation", signature), constants) or (1,)
        found.append(StridedSame(call, callee, stride, kernel, dilation, scope, via))
    return found


def _torch_names(tree: ast.Module) -> dict[str, str]:
    """Local names bound by torch imports -> what they are ('module' or the imported name)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "torch":
                    bound[alias.asname or alias.name.split(".")[0]] = "module"
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            for alias in node.names:
                if alias.name == "*":
                    bound.update({name: name for name in SIGNATURES})
                else:
                    bound[alias.asname or alias.name] = (
                        alias.name if alias.name in SIGNATURES else "module"
                    )
    return bound


def _torch_callee(func: ast.expr, bound: dict[str, str]) -> str | None:
    """'Conv2d' / 'conv2d' / ... when ``func`` names a torch conv, else None."""
    if isinstance(func, ast.Name):
        target = bound.get(func.id)
        return target if target in SIGNATURES else None
    if isinstance(func, ast.Attribute) and func.attr in SIGNATURES:
        root = func.value
        while isinstance(root, ast.Attribute):
            root = root.value
        if isinstance(root, ast.Name) and bound.get(root.id) == "module":
            return func.attr
    return None


def _argument(call: ast.Call, name: str, signature: dict[str, int]) -> ast.expr | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    position = signature.get(name)
    if position is not None and position < len(call.args):
        arg = call.args[position]
        if not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
            return arg
    return None


def _calls_with_scope(tree: ast.Module):
    """(qualified scope, enclosing function or None, call) for every call in the file."""

    def visit(node, scope, func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                inner = f"{scope}.{child.name}" if scope else child.name
                yield from visit(child, inner, child if not isinstance(child, ast.ClassDef) else func)
                continue
            if isinstance(child, ast.Call):
                yield scope or "<module>", func, child
            yield from visit(child, scope, func)

    yield from visit(tree, "", None)


def _module_constants(tree: ast.Module) -> dict[str, object]:
    """Module-level NAME = literal assignments."""
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                pass
    return out


def _ints(node: ast.expr | None, constants: dict[str, object]) -> tuple[int, ...] | None:
    if node is None:
        return None
    if isinstance(node, ast.Name):
        value = constants.get(node.id)
    else:
        try:
            value = ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return (value,)
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


def _resolve_stride(node, func, tree, constants) -> tuple[tuple[int, ...] | None, str | None]:
    """The stride's value: a literal, a module constant, or a parameter of the enclosing helper
    whose default or some call site in the file passes a stride > 1."""
    value = _ints(node, constants)
    if value is not None or not isinstance(node, ast.Name) or func is None:
        return value, None
    params = [a.arg for a in (*func.args.posonlyargs, *func.args.args)]
    if node.id not in params and node.id not in [a.arg for a in func.args.kwonlyargs]:
        return None, None
    default = _parameter_default(func, node.id, constants)
    if default is not None and any(s > 1 for s in default):
        return default, f"the default {node.id}={_fmt(default)} of {func.name}()"
    for call in _calls_to(tree, func.name):
        passed = _passed_value(call, func, node.id, constants)
        if passed is not None and any(s > 1 for s in passed):
            return passed, f"{func.name}(..., {node.id}={_fmt(passed)}) at line {call.lineno}"
    return None, None


def _parameter_default(func, name, constants) -> tuple[int, ...] | None:
    positional = [*func.args.posonlyargs, *func.args.args]
    defaults = func.args.defaults
    offset = len(positional) - len(defaults)
    for i, arg in enumerate(positional):
        if arg.arg == name and i >= offset:
            return _ints(defaults[i - offset], constants)
    for arg, default in zip(func.args.kwonlyargs, func.args.kw_defaults):
        if arg.arg == name and default is not None:
            return _ints(default, constants)
    return None


def _calls_to(tree: ast.Module, name: str):
    """Calls of a helper by name anywhere in the file (``block(...)``, ``self.block(...)``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node.func) == name:
            yield node


def _called_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _passed_value(call: ast.Call, func, name: str, constants) -> tuple[int, ...] | None:
    for keyword in call.keywords:
        if keyword.arg == name:
            return _ints(keyword.value, constants)
    params = [a.arg for a in (*func.args.posonlyargs, *func.args.args)]
    if params and params[0] in ("self", "cls") and isinstance(call.func, ast.Attribute):
        params = params[1:]
    if name in params:
        position = params.index(name)
        if position < len(call.args) and not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
            return _ints(call.args[position], constants)
    return None


def _message(found: StridedSame) -> str:
    stride = _fmt(found.stride)
    where = f" (stride {stride} comes from {found.via})" if found.via else ""
    return (
        f"{found.callee}(..., stride={stride}, padding='same'){where}: PyTorch refuses this "
        "(\"padding='same' is not supported for strided convolutions\"), so the model cannot be "
        "built"
    )


def _autofix(found: StridedSame, location: Location):
    pads = _explicit_padding(found)
    if pads is None or not found.callee[0].isupper():  # F.conv2d: the kernel is in a tensor
        return None
    return source_fix(location, found.callee, {"padding": per_axis(pads)}, FIX_APPLICABILITY,
                      reads=("kernel_size", "stride", "dilation"))


def _explicit_padding(found: StridedSame) -> list[int] | None:
    """Per axis, the symmetric padding that gives ceil(n / stride) when the stride divides n."""
    if found.kernel is None:
        return None
    kernel = found.kernel * (len(found.stride) if len(found.kernel) == 1 else 1)
    stride = found.stride * (len(kernel) if len(found.stride) == 1 else 1)
    dilation = found.dilation * (len(kernel) if len(found.dilation) == 1 else 1)
    return [max(0, -(-(d * (k - 1) + 1 - s) // 2)) for k, s, d in zip(kernel, stride, dilation)]


def _fix(found: StridedSame) -> str:
    if found.kernel is None:
        return (
            "use an explicit padding: padding = dilation * (kernel_size - 1) // 2 for an odd kernel "
            "gives ceil(n / stride) like TensorFlow's SAME; or keep padding='same' with stride=1 "
            "and downsample separately"
        )
    kernel = found.kernel * (len(found.stride) if len(found.kernel) == 1 else 1)
    dilation = found.dilation * (len(kernel) if len(found.dilation) == 1 else 1)
    pads = _explicit_padding(found)
    text = f"use padding={_fmt(tuple(pads))} (gives input / stride when the stride divides the input)"
    if any((d * (k - 1)) % 2 for k, d in zip(kernel, dilation)):
        text += "; TensorFlow's exact SAME pads one more pixel at the end: F.pad first, then padding=0"
    return text


def _fmt(values: tuple[int, ...]) -> str:
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


# ---------------------------------------------------------------------------------------------
# ONNX: auto_pad SAME_* with a stride


def _strided_auto_same(attrs) -> bool:
    mode = (attrs.auto_pad or "").upper()
    return mode in ("SAME_UPPER", "SAME_LOWER") and any(s > 1 for s in attrs.stride)


def _onnx_auto_pad(ctx):
    g = ctx.graph
    if g is None:
        return
    for name in ctx.nodes_where(_strided_auto_same, *WINDOWED, "conv_transpose"):
        attrs = ctx.node(name)["attrs"]
        mode = attrs.auto_pad.upper()
        inputs = ctx.node(name)["inputs"]
        size_in = spatial(output_shape(g, inputs[0])) if inputs else None
        pads = list(attrs.padding)
        yield ctx.finding(
            name,
            _onnx_message(ctx.node(name), mode, attrs, size_in, pads),
            fix=_onnx_fix(pads),
            severity="warning",
        )


def same_pads(n: int, kernel: int, stride: int, dilation: int, mode: str) -> tuple[int, int]:
    """ONNX/TensorFlow SAME (begin, end) pads for one axis of size n."""
    extent = dilation * (kernel - 1) + 1
    out = -(-n // stride)
    total = max((out - 1) * stride + extent - n, 0)
    small = total // 2
    return (small, total - small) if mode == "SAME_UPPER" else (total - small, small)


def _onnx_message(node, mode, attrs, size_in, pads) -> str:
    stride = "x".join(map(str, attrs.stride))
    text = f"{node['origin'] or node['op']} uses auto_pad={mode} with strides {stride}"
    if size_in and pads:
        pairs = ", ".join(f"({b}, {e})" for b, e in pads)
        shape = "symmetric" if all(b == e for b, e in pads) else "asymmetric"
        text += f": at {'x'.join(map(str, size_in))} it pads (begin, end) = {pairs}, {shape}"
        other = [n + 1 for n in size_in]
        dilation = attrs.dilation or (1,) * len(attrs.kernel)
        if attrs.kernel and len(attrs.kernel) == len(other):
            pairs_other = [same_pads(n, k, s, d, mode) for n, k, s, d in zip(other, attrs.kernel, attrs.stride, dilation)]
            if pairs_other != [tuple(p) for p in pads]:
                text += (
                    f", and at {'x'.join(map(str, other))} it would pad "
                    + ", ".join(f"({b}, {e})" for b, e in pairs_other)
                )
    return text + ": the pads depend on the input size, which explicit PyTorch padding cannot follow"


def _onnx_fix(pads) -> str:
    if not pads:
        return "replace auto_pad with explicit pads (or a Pad node before a VALID conv)"
    begins = [b for b, _ in pads]
    ends = [e for _, e in pads]
    onnx_pads = begins + ends
    if begins == ends:
        return (
            f"for this input size it equals explicit symmetric pads={onnx_pads} "
            f"(PyTorch padding={_fmt(tuple(begins))}); export with explicit pads to pin it"
        )
    torch_pad = [v for b, e in reversed(pads) for v in (b, e)]
    return (
        f"make the padding explicit: pads={onnx_pads} (ONNX order: begins, then ends), i.e. in "
        f"PyTorch F.pad(x, {tuple(torch_pad)}) followed by the conv with padding=0"
    )
