"""Capture of one model: the public entry points, fx tracing, and the choice between the fx and the
eager (TorchFunctionMode) capture."""


from __future__ import annotations

import contextlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.fx as fx
import torch.nn as nn

from archlint.config import ConfigError, ModelSpec, Options, parse_model_spec
from archlint.deadline import TimedOut, deadline
from archlint.frontends import Capture, TargetError
from archlint.frontends.torch.builder import _GraphBuilder
from archlint.frontends.torch.discovery import (
    _build,
    _discover,
    _drop_nested_classes,
    _import_file,
    _importing_from,
    _quiet_user_code,
)
from archlint.frontends.torch.inputs import (
    ExampleInputs,
    InputSpec,
    _chosen_inputs,
    _file_example_input,
    _file_example_kwargs,
    _container_input,
    _first_layer,
    _missing_batch_dim,
    _shape_hint,
)
from archlint.frontends.torch.locate import (
    ConstructionSites,
    _FileNames,
    _innermost_user_frame,
    _one_line,
    _user_frame_of,
)
from archlint.frontends.torch.opcall import _module_origin
from archlint.graph import new_graph
from archlint.suggest import did_you_mean
from archlint.project import import_plan


def capture_file(path: Path, options: Options, example_inputs: Any = None,
                 example_kwargs: Any = None) -> list[Capture]:
    """Import ``path``, find its models and capture each one.

    Raises :class:`TargetError` when the file as a whole cannot be analyzed (syntax error, import
    raised or exited, no model found, ``--model`` not found).
    """
    path = Path(path)
    try:
        with deadline(options.timeout):
            return _capture_file(path, options, example_inputs, example_kwargs)
    except TimedOut as exc:
        raise TargetError(f"{exc} importing and capturing {path.name}") from None


def _capture_file(path: Path, options: Options, example_inputs: Any,
                  example_kwargs: Any) -> list[Capture]:
    files = _FileNames(path)
    sites = ConstructionSites(files)
    specs = _model_specs(options, path)
    plan = import_plan(path, options.import_roots())
    with _quiet_user_code(), _importing_from(plan):
        namespace = _import_file(path, sites, plan)
        candidates = _discover(namespace, path, specs)
        file_input = _file_example_input(namespace)
        if example_kwargs is None:
            example_kwargs = _file_example_kwargs(namespace)
        built = [(c, *_build(c, sites)) for c in candidates]
        if not specs and all(c.kind == "class" for c in candidates):
            built = _drop_nested_classes(built)
        captures = []
        for candidate, module, error in built:
            if error is not None:
                captures.append(Capture(name=candidate.name, graph=None, error=error))
                continue
            inputs = _chosen_inputs(options, example_inputs, file_input, example_kwargs)
            capture = _capture(module, candidate.name, inputs, str(path), files, sites)
            g = capture.graph
            if g is not None:
                factory = candidate.factory() if candidate.kind in ("class", "factory") else None
                g.graph["module_factory"] = factory
                g.graph["module"] = candidate.obj if factory is None else None
            captures.append(capture)
    return captures


def _model_specs(options: Options, path: Path) -> list[tuple[ModelSpec, str]]:
    """The models named for this file: ``--model``, else its entries in ``[tool.archlint] models``."""
    try:
        if options.model is not None:
            return [(parse_model_spec(options.model), "--model")]
        origin = "[tool.archlint] models entry"
        return [(parse_model_spec(text, origin), origin) for text in options.models_for(path)]
    except ConfigError as exc:
        raise TargetError(str(exc)) from None


def capture_module(
    module: Any, example_inputs: Any, options: Options, name: str | None = None,
    example_kwargs: Any = None,
) -> Capture:
    """Capture an ``nn.Module`` given through the Python API (its weights stay as they are)."""
    if not isinstance(module, nn.Module):
        raise TargetError(
            f"expected a path, an nn.Module or an onnx.ModelProto, got {type(module).__name__}"
        )
    name = name or type(module).__name__
    files = _FileNames(None)
    sites = ConstructionSites(files)
    specs = _chosen_inputs(options, example_inputs, None, example_kwargs)
    try:
        with deadline(options.timeout), _quiet_user_code():
            capture = _capture(module, name, specs, None, files, sites)
    except TimedOut as exc:
        reason = f"{exc} capturing {name}"
        return Capture(name=name, graph=None, error=reason)
    if capture.graph is not None:
        capture.graph.graph["module"] = module
        capture.graph.graph["module_factory"] = None
    return capture




class _ArchlintTracer(fx.Tracer):
    """fx's tracer, recording the innermost user frame of each node.

    fx's own ``record_stack_traces`` symbolizes through the profiler, which imports
    torch._dynamo (seconds); one frame walk per node is all a location needs.
    """

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        with _eager_type_checks():
            return super().trace(root, concrete_args)

    def create_node(self, kind: str, target: Any, args: tuple, kwargs: dict,
                    name: str | None = None, type_expr: Any = None) -> fx.Node:
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        frame = _innermost_user_frame(sys._getframe(1))
        if frame is not None:
            node.meta["user_frame"] = frame
            node.stack_trace = f'File "{frame[0]}", line {frame[1]}'
        return node


@contextlib.contextmanager
def _eager_type_checks():
    """``torch.jit.isinstance`` as eager mode answers it, or no fx trace at all: on an fx proxy
    it would say False where eager mode says True (a ``torch.cat`` under
    ``if torch.jit.isinstance(x, torch.Tensor)`` would vanish from the graph), so a type check
    on a traced value stops the trace and capture runs forward on meta tensors instead.
    (``torch.jit.is_scripting`` and ``torch.compiler.is_compiling`` already say False, as in
    eager mode.)"""
    original = torch.jit.isinstance

    def isinstance_as_eager(obj: Any, target_type: Any) -> bool:
        if _holds_proxy(obj):
            raise fx.proxy.TraceError("torch.jit.isinstance on a traced value: fx cannot "
                                      "tell its type")
        return original(obj, target_type)

    torch.jit.isinstance = isinstance_as_eager
    try:
        yield
    finally:
        torch.jit.isinstance = original


def _holds_proxy(obj: Any) -> bool:
    if isinstance(obj, fx.Proxy):
        return True
    if isinstance(obj, dict):
        return any(_holds_proxy(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_holds_proxy(v) for v in obj)
    return False


def _capture(
    module: nn.Module,
    name: str,
    inputs: ExampleInputs | str | None,
    target: str | None,
    files: _FileNames,
    sites: ConstructionSites,
) -> Capture:
    if isinstance(inputs, str):
        return Capture(name=name, graph=None, error=f"bad example input for {name}: {inputs}")
    training = [(m, m.training) for m in module.modules()]
    module.eval()  # batch-1 inputs are legal in eval mode; BatchNorm refuses them in training
    try:
        return _capture_eval(module, name, inputs, target, files, sites)
    except Exception as exc:  # never an unexplained crash
        where = _user_frame_of(exc, files)
        at = f" (at {where})" if where else ""
        return Capture(
            name=name,
            graph=None,
            error=f"could not trace {name}: {type(exc).__name__}: {_one_line(exc)}{at}",
        )
    finally:
        for m, flag in training:
            m.training = flag


def _capture_eval(
    module: nn.Module,
    name: str,
    inputs: ExampleInputs | None,
    target: str | None,
    files: _FileNames,
    sites: ConstructionSites,
) -> Capture:
    notes: list[str] = []
    if inputs is not None and inputs.args is None and _first_param_given(module, inputs):
        inputs = inputs.with_args(())  # example_kwargs = {"pixel_values": ...}: nothing to infer
    assumed = inputs is None or inputs.args is None
    n_positional = len(inputs.args) if inputs is not None and inputs.args is not None else 1
    gm, trace_error = _fx_trace(module, n_positional, files)
    first_is_tensor = assumed or isinstance(inputs.args[0] if inputs.args else None, InputSpec)
    container = _container_input(gm, module, assumed) if first_is_tensor else None
    if container is not None:
        given = "" if assumed else " (the example input given is a tensor)"
        return Capture(name=name, graph=None, error=f"cannot build an input for {name}: "
                       f"{container}{given}")
    if assumed:
        inferred = _inferred_input(gm, module)
        if inferred is None:
            return Capture(name=name, graph=None, error=(
                f"cannot infer an input shape for {name}: set --input-shape, a module-level "
                "example_input, or input-shape in [tool.archlint]"))
        inputs = ExampleInputs((inferred[0],), inputs.kwargs if inputs is not None else ())
        notes.append(inferred[1])
    problem = _missing_inputs(module, name, inputs)
    if problem is None and not assumed:
        problem = _missing_batch_dim(gm, module, name, inputs)
    if problem is not None:
        return Capture(name=name, graph=None, error=problem)
    if inputs.structured:
        gm, trace_error = _fx_trace_structured(module, inputs, files)
    default_dtype = _default_input_dtype(module, gm)
    names = [p.name for p in _forward_params(module)]
    leaves = inputs.leaves(names)
    tensors = [spec.meta_tensor(default_dtype) for _, spec in leaves]
    g = new_graph(name, target, "torch")
    g.graph.update(
        input_shapes=[tuple(spec.shape) for _, spec in leaves],
        input_dtypes=[str(t.dtype).replace("torch.", "") for t in tensors],
        input_names=[leaf_name for leaf_name, _ in leaves],
        input_structured=inputs.structured,
        # (tensors, one per leaf) -> forward's (args, kwargs): --confirm calls the real forward
        input_call=inputs.call_with,
        input_assumed=assumed,
        fx_names={},
        traced_module=module,  # the object traced: meta-built unless the user gave it
        graph_module=gm,  # the fx graph (on the traced module), None after an eager capture
    )
    builder = _GraphBuilder(g, module, files, sites)
    if gm is not None:
        builder.from_fx(gm, tensors)
    else:
        notes.append(f"torch.fx could not trace {name} ({trace_error}); captured by running "
                     "forward on meta tensors instead")
        args, kwargs = inputs.call_with(tensors)
        builder.from_eager(tensors, args, kwargs)
    if g.graph["capture_note"]:
        notes.append(g.graph["capture_note"])
    _attach_symbolic_runner(g, module, inputs, [tuple(spec.shape) for _, spec in leaves],
                            [t.dtype for t in tensors], files, gm)
    return Capture(name=name, graph=g, notes=notes)


def _attach_symbolic_runner(g, module: nn.Module, inputs: ExampleInputs,
                            shapes: list[tuple[int, ...]], dtypes: list[torch.dtype],
                            files: _FileNames, gm: fx.GraphModule | None) -> None:
    """Leave the sizes pass a way to run ``forward`` symbolically at any size
    (:mod:`archlint.frontends.torch.symbolic`), the example point, and whether the fx graph
    reads sizes (if not, the per-op formulas are already exact). Inputs given by keyword or in
    a dict are passed the same way; each input's sizes move with the first spatial input's."""
    from archlint.frontends.torch.symbolic import example_point, input_leaves

    leaves = input_leaves(shapes, dtypes)
    example = example_point(leaves)
    if not any(axis != "batch" for axis in example):
        return

    values: list[dict] = []

    def run_at(point: dict[str, int], symbolic: frozenset[str] | None = None, **options):
        from archlint.frontends.torch.symbolic import symbolic_run

        if not values:
            values.append(_meta_index_values(module, g.graph.get("module_factory")))
        return symbolic_run(module, leaves, inputs.call_with, point, files, symbolic, values[0],
                            **options)

    run_at.leaves = leaves  # type: ignore[attr-defined]  # which sizes each input takes
    g.graph["symbolic_runner"] = run_at
    g.graph["symbolic_example"] = example
    g.graph["reads_sizes"] = gm is None or _reads_sizes(gm)
    g.graph["kernel_checks"] = _has_kernel_checks(module)


_MAX_REBUILD_VALUES = 1 << 28


def _meta_index_values(module: nn.Module, factory: Callable[[], Any] | None
                       ) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """id(buffer) -> (buffer, its values) for the integer buffers archlint built on the meta
    device (index buffers: ``torch.arange``, a meshgrid of relative positions), recomputed by
    building the model once more on the CPU, so that the bounds of an index into a
    size-dependent dim can be checked. Empty when there are none or the rebuild fails."""
    meta = [(name, b) for name, b in module.named_buffers()  # not BatchNorm's 0-d counter
            if b.device.type == "meta" and b.dim() > 0 and not b.is_floating_point()
            and not b.is_complex()]
    if not meta or factory is None:
        return {}
    # the rebuild allocates every weight too: past this many values (1 GiB of float32) the
    # index bounds stay undecided rather than the lint paying for a second, real model
    if sum(p.numel() for p in module.parameters()) > _MAX_REBUILD_VALUES:
        return {}
    try:
        with _quiet_user_code(), torch.device("cpu"):
            rebuilt = factory()
        cpu = dict(rebuilt.named_buffers())
    except Exception:
        return {}
    return {id(b): (b, cpu[name]) for name, b in meta
            if name in cpu and cpu[name].shape == b.shape and cpu[name].dtype == b.dtype}


def _first_param_given(module: nn.Module, inputs: ExampleInputs) -> bool:
    """True when the keyword inputs name forward's first positional parameter."""
    params = _forward_params(module)
    return bool(params) and params[0].name in dict(inputs.kwargs)


def _has_kernel_checks(module: nn.Module) -> bool:
    """True when a layer makes a size check that only real kernels make (a norm over one
    sample's statistics needs more than one value per channel), which the per-op formulas do
    not model."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.instancenorm import _InstanceNorm

    for m in module.modules():
        if isinstance(m, (_InstanceNorm, nn.GroupNorm)):
            return True
        if isinstance(m, _BatchNorm) and not m.track_running_stats:
            return True
    return False


def _reads_sizes(gm: fx.GraphModule) -> bool:
    """True when forward reads a size (x.shape, x.size(), x.dim()) or holds a constant tensor."""
    for node in gm.graph.nodes:
        if node.op == "get_attr":
            return True
        if node.op == "call_method" and node.target in ("size", "dim", "numel", "new_zeros",
                                                          "new_ones", "new_empty", "new_full"):
            return True
        if node.op == "call_function" and node.target is getattr:
            return True
    return False


def _inferred_input(gm: fx.GraphModule | None, module: nn.Module) -> tuple[InputSpec, str] | None:
    """An input shape guessed from the first layer, and the note that says so."""
    first = _first_layer(gm, module)
    hint = _shape_hint(first[1]) if first else None
    if hint is None:
        return None
    note = (
        f"input shape {_fmt_shape(hint.shape)} assumed from the first layer {first[0]} "
        f"({_module_origin(first[1])}); set it with --input-shape, a module-level "
        "example_input, or input-shape in [tool.archlint]"
    )
    return hint, note


def _missing_inputs(module: nn.Module, name: str, inputs: ExampleInputs) -> str | None:
    """Forward's required parameters that the example leaves unset, or keyword arguments it
    does not take."""
    params = _all_forward_params(module)
    if params is None:
        return None
    names = [p.name for p in params if p.kind is not inspect.Parameter.VAR_KEYWORD]
    takes_any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    for key, _ in inputs.kwargs:
        if key not in names and not takes_any_keyword:
            return (f"example_kwargs gives {key!r}, but {name}.forward has no such parameter"
                    + did_you_mean(key, names, what="its parameters"))
    positional = [p for p in params if p.kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    given = {p.name for p in positional[:len(inputs.args or ())]} | {k for k, _ in inputs.kwargs}
    required = [p.name for p in params if p.default is inspect.Parameter.empty
                and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    missing = [r for r in required if r not in given]
    if not missing:
        return None
    return (
        f"{name}.forward takes {len(required)} inputs ({', '.join(required)}) but "
        f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not given: set "
        "example_input = (t1, t2, ...) or pass --input-shape once per input, and "
        "example_kwargs = {...} for keyword inputs"
    )


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return ",".join(str(d) for d in shape)


def _all_forward_params(module: nn.Module) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return None


def _forward_params(module: nn.Module) -> list[inspect.Parameter]:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return []
    return [
        p for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]


def trace(module: nn.Module, n_inputs: int = 1) -> fx.GraphModule:
    """fx-trace ``module`` exactly as capture does, so its node names are the keys of
    ``g.graph["fx_names"]`` (for running the same graph on a real device). Raises on failure;
    parameters of ``forward`` past the first ``n_inputs`` keep their defaults."""
    concrete = {
        p.name: p.default
        for p in _forward_params(module)[n_inputs:]
        if p.default is not inspect.Parameter.empty
    }
    graph = _ArchlintTracer().trace(module, concrete_args=concrete or None)
    return fx.GraphModule(module, graph, class_name=type(module).__name__)


def _fx_trace(
    module: nn.Module, n_inputs: int, files: _FileNames
) -> tuple[fx.GraphModule | None, str | None]:
    """:func:`trace`, or ``(None, one-line reason)`` when fx cannot trace it."""
    try:
        return trace(module, n_inputs), None
    except Exception as exc:
        where = _user_frame_of(exc, files)
        at = f" at {where}" if where else ""
        return None, f"{type(exc).__name__}: {_one_line(exc)}{at}"


class _ExampleTracer(_ArchlintTracer):
    """Traces forward called with an example's structure: a dict, a list, keyword arguments.
    Each tensor leaf becomes one placeholder named after its path (``batch_image``); the
    structure itself is plain Python during tracing, so ``batch["image"]`` costs no node and
    parameters that are not given keep their defaults."""

    def __init__(self, inputs: ExampleInputs, param_names: list[str]):
        super().__init__()
        self.inputs = inputs
        self.param_names = param_names

    def create_args_for_root(self, root_fn: Any, is_module: bool, concrete_args: Any = None):
        names = iter(name for name, _ in self.inputs.leaves(self.param_names))
        args, kwargs = self.inputs.call_values(
            lambda _name, _spec: self.create_proxy("placeholder", next(names), (), {}))
        root = self.root

        def forward_with_example() -> Any:
            return root_fn(root, *args, **kwargs)

        return forward_with_example, []


def _fx_trace_structured(module: nn.Module, inputs: ExampleInputs, files: _FileNames
                         ) -> tuple[fx.GraphModule | None, str | None]:
    try:
        names = [p.name for p in _forward_params(module)]
        graph = _ExampleTracer(inputs, names).trace(module)
        return fx.GraphModule(module, graph, class_name=type(module).__name__), None
    except Exception as exc:
        where = _user_frame_of(exc, files)
        at = f" at {where}" if where else ""
        return None, f"{type(exc).__name__}: {_one_line(exc)}{at}"


def _default_input_dtype(module: nn.Module, gm: fx.GraphModule | None) -> torch.dtype:
    first = _first_layer(gm, module)
    if first is not None and isinstance(first[1], (nn.Embedding, nn.EmbeddingBag)):
        return torch.long
    return torch.float32
