"""Example inputs: ``--input-shape``, ``example_input`` in the file, ``[tool.archlint]``, else a shape
inferred from the first layer; plus ``example_kwargs``. An input may be a dict or a list of
tensors (one placeholder per tensor). Also the checks on a given input: a missing batch dim, and
a model whose forward wants a dict when the input would be assumed."""


from __future__ import annotations

import inspect
import operator
import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn

from archlint.config import Options, load_config


@dataclass(frozen=True)
class InputSpec:
    shape: tuple[int, ...]
    dtype: torch.dtype | None = None  # None: decided by the first layer (float, long for Embedding)

    def meta_tensor(self, default_dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(self.shape, dtype=self.dtype or default_dtype, device="meta")


@dataclass(frozen=True)
class ExampleInputs:
    """What ``forward`` is called with: positional arguments and keyword arguments, each a tree
    (dicts, lists, tuples) whose leaves are :class:`InputSpec` or literal constants.

    ``args`` is None when only keyword arguments were given: the first positional input is then
    inferred from the first layer.
    """

    args: tuple[Any, ...] | None
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def structured(self) -> bool:
        """Anything but plain positional tensors: traced with one placeholder per tensor leaf."""
        return bool(self.kwargs) or any(not isinstance(a, InputSpec) for a in self.args or ())

    def leaves(self, names: list[str]) -> list[tuple[str, InputSpec]]:
        """The tensor leaves, in placeholder order, each named after its path
        (``batch_image``, ``mask``); ``names`` are forward's positional parameter names."""
        out: list[tuple[str, InputSpec]] = []
        for i, value in enumerate(self.args or ()):
            _walk(value, names[i] if i < len(names) else f"input{i}", out)
        for key, value in self.kwargs:
            _walk(value, key, out)
        return out

    def specs(self) -> list[InputSpec]:
        return [spec for _, spec in self.leaves([])]

    def with_args(self, args: tuple[Any, ...]) -> "ExampleInputs":
        return ExampleInputs(args, self.kwargs)

    def call_values(self, leaf: Callable[[str, InputSpec], Any]) -> tuple[tuple, dict]:
        """``(args, kwargs)`` for forward, each tensor leaf replaced by ``leaf(name, spec)``."""
        args = tuple(_rebuild(v, f"input{i}", leaf) for i, v in enumerate(self.args or ()))
        kwargs = {k: _rebuild(v, k, leaf) for k, v in self.kwargs}
        return args, kwargs

    def call_with(self, tensors: Any) -> tuple[tuple, dict]:
        """``(args, kwargs)`` for forward with ``tensors`` (one per leaf, in leaf order)."""
        by_leaf = iter(tensors)
        return self.call_values(lambda _name, _spec: next(by_leaf))


def _walk(value: Any, name: str, out: list[tuple[str, InputSpec]]) -> None:
    if isinstance(value, InputSpec):
        out.append((name, value))
    elif isinstance(value, dict):
        for key, item in value.items():
            _walk(item, f"{name}_{key}", out)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _walk(item, f"{name}_{i}", out)


def _rebuild(value: Any, name: str, leaf: Callable[[str, InputSpec], Any]) -> Any:
    if isinstance(value, InputSpec):
        return leaf(name, value)
    if isinstance(value, dict):
        return {k: _rebuild(v, f"{name}_{k}", leaf) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_rebuild(v, f"{name}_{i}", leaf) for i, v in enumerate(value))
    return value


_NO_FILE_INPUT = object()


def _file_example_input(namespace: types.ModuleType) -> Any:
    return getattr(namespace, "example_input", _NO_FILE_INPUT)


def _file_example_kwargs(namespace: types.ModuleType | None) -> Any:
    return getattr(namespace, "example_kwargs", None) if namespace is not None else None


def _chosen_inputs(
    options: Options, example_inputs: Any, file_input: Any, example_kwargs: Any = None
) -> ExampleInputs | str | None:
    """The example input by precedence: ``--input-shape``, the API's ``example_inputs``, the
    file's ``example_input``, ``[tool.archlint]``, plus ``example_kwargs`` (the API's, else the
    file's); ``None`` means infer it from the first layer, and a string says why the given input
    is unusable."""
    kwargs: tuple[tuple[str, Any], ...] = ()
    if example_kwargs is not None:
        if not (isinstance(example_kwargs, dict) and all(isinstance(k, str) for k in example_kwargs)):
            return f"example_kwargs must be a dict of parameter name -> input; got {type(example_kwargs).__name__}"
        converted = {}
        for key, value in example_kwargs.items():
            tree = _tree_from_value(value, f"example_kwargs[{key!r}]")
            if isinstance(tree, _Bad):
                return tree.reason
            converted[key] = tree
        kwargs = tuple(converted.items())
    args = _chosen_args(options, example_inputs, file_input)
    if isinstance(args, str):
        return args
    if args is None and not kwargs:
        return None
    return ExampleInputs(args, kwargs)


def _chosen_args(options: Options, example_inputs: Any, file_input: Any
                 ) -> tuple[Any, ...] | str | None:
    config_shapes = _config_input_shapes(options)
    cli_shapes = options.input_shapes if options.input_shapes != config_shapes else None
    if cli_shapes:
        return tuple(InputSpec(tuple(s)) for s in cli_shapes)
    if example_inputs is not None:
        return _args_from_value(example_inputs, "example_inputs")
    if file_input is not _NO_FILE_INPUT and file_input is not None:
        return _args_from_value(file_input, "example_input")
    if config_shapes:
        return tuple(InputSpec(tuple(s)) for s in config_shapes)
    return None


def _config_input_shapes(options: Options) -> tuple[tuple[int, ...], ...] | None:
    """The input shapes ``[tool.archlint]`` gives, to rank them below ``example_input``."""
    if not options.config_file:
        return None
    try:
        return load_config(path=Path(options.config_file)).input_shapes
    except Exception:
        return None


@dataclass(frozen=True)
class _Bad:
    reason: str


def _args_from_value(value: Any, what: str) -> tuple[Any, ...] | str:
    """A tensor or a shape is one input; a dict is one dict input; a tuple or list holds one
    input per item (each a tensor, a shape, or a dict/list of them)."""
    if isinstance(value, (tuple, list)) and value and not _is_shape(value):
        items = [_tree_from_value(item, f"{what}[{i}]") for i, item in enumerate(value)]
    else:
        items = [_tree_from_value(value, what)]
    for item in items:
        if isinstance(item, _Bad):
            return item.reason
    if not any(_has_spec(item) for item in items):
        return _bad_input(what, value).reason
    return tuple(items)


_CONSTANTS = (bool, int, float, str, type(None))


def _tree_from_value(value: Any, what: str) -> Any:
    """Tensors and shape tuples become InputSpecs; dicts, lists and tuples keep their form;
    literal constants (``True``, ``0.5``, ``None``) pass through as they are."""
    if isinstance(value, torch.Tensor):
        return InputSpec(tuple(value.shape), value.dtype)
    if _is_shape(value):
        return InputSpec(tuple(int(d) for d in value))
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            tree = _tree_from_value(item, f"{what}[{key!r}]")
            if isinstance(tree, _Bad):
                return tree
            out[key] = tree
        return out
    if isinstance(value, (list, tuple)):
        items = [_tree_from_value(item, f"{what}[{i}]") for i, item in enumerate(value)]
        bad = next((i for i in items if isinstance(i, _Bad)), None)
        return bad if bad is not None else type(value)(items)
    if isinstance(value, _CONSTANTS):
        return value
    return _bad_input(what, value)


def _has_spec(tree: Any) -> bool:
    out: list[tuple[str, InputSpec]] = []
    _walk(tree, "", out)
    return bool(out)


def _bad_input(what: str, value: Any) -> _Bad:
    return _Bad(
        f"{what} must be a tensor, a shape tuple, or a tuple, list or dict of them; "
        f"got {type(value).__name__}"
    )


def _is_shape(value: Any) -> bool:
    return (
        isinstance(value, (tuple, list, torch.Size))
        and len(value) > 0
        and all(isinstance(d, int) and not isinstance(d, bool) for d in value)
    )


def _shape_hint(module: nn.Module) -> InputSpec | None:
    """A sensible example input for a model whose first layer is ``module``."""
    if isinstance(module, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm,
                           nn.modules.instancenorm._InstanceNorm)):
        channels = getattr(module, "in_channels", None) or getattr(module, "num_features")
        nd = _module_nd(module)
        spatial = {1: (1024,), 2: (224, 224), 3: (16, 112, 112)}.get(nd)
        if spatial is None:
            return None
        return InputSpec((1, channels, *spatial))
    if isinstance(module, nn.Linear):
        return InputSpec((1, module.in_features))
    if isinstance(module, nn.Embedding):
        return InputSpec((1, 128), torch.long)
    if isinstance(module, nn.modules.rnn.RNNBase):
        return InputSpec((1, 128, module.input_size) if module.batch_first
                         else (128, 1, module.input_size))
    if isinstance(module, nn.LayerNorm):
        return InputSpec((1, 128, *module.normalized_shape))
    return None


def _first_layer(gm: fx.GraphModule | None, root: nn.Module) -> tuple[str, nn.Module] | None:
    """The first module the forward calls (fx order), else the first leaf registered."""
    if gm is not None:
        for node in gm.graph.nodes:
            if node.op == "call_module":
                return node.target, gm.get_submodule(node.target)
    for name, module in root.named_modules():
        if not list(module.children()):
            return name, module
    return None


def _module_nd(module: nn.Module) -> int | None:
    for cls in type(module).__mro__:
        m = re.search(r"([123])d$", cls.__name__)
        if m:
            return int(m.group(1))
    kernel = getattr(module, "kernel_size", None)
    if isinstance(kernel, tuple):
        return len(kernel)
    return None


# --- checks on the input ----------------------------------------------------------------------

#: Layers that take an unbatched input one rank short, read as a single sample: (rank with batch).
_BATCHED_RANK: tuple[tuple[type, Callable[[nn.Module], int | None]], ...] = (
    (nn.modules.conv._ConvNd, lambda m: _nd_plus(m, 2)),
    (nn.modules.pooling._MaxPoolNd, lambda m: _nd_plus(m, 2)),
    (nn.modules.pooling._AvgPoolNd, lambda m: _nd_plus(m, 2)),
    (nn.modules.pooling._AdaptiveAvgPoolNd, lambda m: _nd_plus(m, 2)),
    (nn.modules.pooling._AdaptiveMaxPoolNd, lambda m: _nd_plus(m, 2)),
    (nn.modules.batchnorm._BatchNorm, lambda m: _nd_plus(m, 2)),
    (nn.modules.instancenorm._InstanceNorm, lambda m: _nd_plus(m, 2)),
    (nn.Linear, lambda m: 2),
    (nn.Embedding, lambda m: 2),
    (nn.modules.rnn.RNNBase, lambda m: 3),
)

_LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def _nd_plus(module: nn.Module, extra: int) -> int | None:
    nd = _module_nd(module)
    return nd + extra if nd is not None else None


def _missing_batch_dim(gm: fx.GraphModule | None, module: nn.Module, name: str,
                       inputs: ExampleInputs) -> str | None:
    """The first input is one rank short of what the layer that reads it expects: a sample
    without its batch dim, which PyTorch would run unbatched and every size fact would misread."""
    first = inputs.args[0] if inputs.args else None
    if gm is None or not isinstance(first, InputSpec):
        return None
    layer = _layer_reading_input(gm)
    if layer is None:
        return None
    qualname, child = layer
    expected = next((rank(child) for kind, rank in _BATCHED_RANK if isinstance(child, kind)), None)
    if expected is None or len(first.shape) != expected - 1:
        return None
    from archlint.frontends.torch.opcall import _module_origin

    shape = ",".join(str(d) for d in first.shape)
    layout = _LAYOUTS.get(expected - 2) if expected > 3 else None
    reads = f"{expected}-D input {layout}" if layout else f"{expected}-D input, batch first"
    return (
        f"input shape {shape} for {name} is missing the batch dim: its first layer {qualname} "
        f"({_module_origin(child)}) reads {reads}, and this {len(first.shape)}-D input is one "
        f"rank short; add the batch dim: --input-shape 1,{shape}"
    )


def _layer_reading_input(gm: fx.GraphModule) -> tuple[str, nn.Module] | None:
    """The first module called directly on the first placeholder."""
    placeholder = next((n for n in gm.graph.nodes if n.op == "placeholder"), None)
    if placeholder is None:
        return None
    for node in gm.graph.nodes:
        if node.op == "call_module" and node.args and node.args[0] is placeholder:
            return str(node.target), gm.get_submodule(node.target)
    return None


_DICT_METHODS = frozenset({"keys", "items", "values", "get"})


def _container_input(gm: fx.GraphModule | None, module: nn.Module, assumed: bool) -> str | None:
    """Why a tensor cannot stand in for forward's first input: forward reads it as a dict
    (``batch["image"]``, ``batch.items()``), or (for an assumed input) annotates it as a mapping
    or a sequence."""
    param = _first_param(module)
    if param is None:
        return None
    keys: list[str] = []
    if gm is not None:
        placeholder = next((n for n in gm.graph.nodes if n.op == "placeholder"), None)
        for user in (placeholder.users if placeholder is not None else ()):
            if user.target is operator.getitem and len(user.args) > 1 \
                    and isinstance(user.args[1], str):
                keys.append(user.args[1])
            elif user.op == "call_method" and user.target in _DICT_METHODS:
                keys.append("...")
    annotation = _annotation_text(param) if assumed else ""
    if not keys and not re.search(r"\b(dict|Dict|Mapping|TypedDict|list|List|Sequence)\b",
                                  annotation):
        return None
    if keys:
        known = [k for k in dict.fromkeys(keys) if k != "..."]
        shown = ", ".join(f"{k!r}: ..." for k in known) or "...: ..."
        how = f"forward reads {param.name} as a dict ({', '.join(f'{param.name}[{k!r}]' for k in known) or param.name + '.items()'})"
        fix = f"example_input = {{{shown}}}"
    else:
        how = f"forward's {param.name} is annotated {annotation}"
        fix = "example_input = {...} (or a list)"
    return (f"{how}, and archlint cannot guess its contents; set {fix} in the file, with a "
            "tensor or a shape tuple per entry")


def _first_param(module: nn.Module) -> inspect.Parameter | None:
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None
    return params[0] if params else None


def _annotation_text(param: inspect.Parameter) -> str:
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        return ""
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation)
