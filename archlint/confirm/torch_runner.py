"""Confirming on PyTorch: runs, the receptive-field gradient probe."""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING, Any, Callable

from archlint.confirm.confirmer import _Confirmer
from archlint.confirm.predictions import (
    RF_MARGIN,
    RFProbe,
    Run,
    _one_line,
    differing_spatial,
    global_ancestors,
    probe_unit,
    rf_fields,
    rf_verdict,
    support_bounds,
)
from archlint.graph import ELEMENTWISE_MERGES

if TYPE_CHECKING:
    import networkx as nx
    from archlint.findings import Finding



class _TorchConfirmer(_Confirmer):
    def __init__(self, g: "nx.DiGraph", device: str) -> None:
        import torch

        self.torch = torch
        self.g = g
        self.device = torch.device(device)
        self.fx_names: dict[str, str] = dict(g.graph.get("fx_names") or {})
        self._module = None
        self._gm = None

    def confirm(self, findings: list["Finding"]) -> dict[str, Any]:
        try:
            return super().confirm(findings)
        finally:
            self._module = self._gm = None
            if self.device.type == "cuda":
                self.torch.cuda.empty_cache()

    # --- building ------------------------------------------------------------------------------

    def fresh_module(self) -> Any:
        """A new copy of the model with real (random) weights, on the CPU, in eval mode."""
        torch = self.torch
        factory: Callable[[], Any] | None = self.g.graph.get("module_factory")
        if factory is not None:
            with torch.device("cpu"):
                module = factory()
        else:
            module = self.g.graph.get("module")
            if module is None:
                raise RuntimeError("the graph carries no module to run")
            module = copy.deepcopy(module)
        if any(t.is_meta for t in [*module.parameters(), *module.buffers()]):
            module = _materialize(module)
        return module.eval()

    def module(self) -> Any:
        if self._module is None:
            self._module = self.fresh_module().to(self.device)
        return self._module

    def graph_module(self, module: Any) -> Any:
        """The traced fx graph bound to ``module``'s real weights (re-traced if not given)."""
        fx = self.torch.fx
        traced = self.g.graph.get("graph_module")
        if traced is not None:
            return fx.GraphModule(module, copy.deepcopy(traced.graph))
        if self.g.graph.get("input_structured"):
            # dict or keyword inputs run only through the fx graph's one placeholder per tensor
            raise RuntimeError("a model with dict or keyword inputs needs its fx graph to run")
        # Re-trace with the frontend's tracer so that fx node names match ``fx_names``.
        try:
            from archlint.frontends.torch import _ArchlintTracer as Tracer
        except ImportError:
            Tracer = fx.Tracer
        return fx.GraphModule(module, Tracer().trace(module, concrete_args=_defaults_past(
            module, len(self.example_shapes))))

    # --- one run -------------------------------------------------------------------------------

    def run_at(self, input_shapes: list[tuple[int, ...]]) -> Run:
        """The real model's own forward decides whether a size runs (never the traced graph,
        which may have frozen a branch, ``torch.jit.is_scripting()`` or a shape); the fx graph
        only attributes shapes and the failing op to IR nodes, and only when it does what the
        real forward did."""
        torch = self.torch
        run = Run(input_shapes=list(input_shapes))
        module = self.module()
        # forward's (args, kwargs) from the tensors, one per leaf: dicts and keywords as given
        call = self.g.graph.get("input_call")
        if call is None and self.g.graph.get("input_structured"):
            raise RuntimeError("no way to call forward with its dict or keyword inputs")
        if self._gm is None:
            try:
                self._gm = self.graph_module(module)
            except Exception:
                self._gm = False
        inputs = [self._input(s, i) for i, s in enumerate(input_shapes)]
        with torch.no_grad():
            try:
                args, kwargs = call(inputs) if call is not None else (inputs, {})
                module(*args, **kwargs)
            except Exception as exc:
                run.error = _one_line(exc)
            if self._gm is not False:
                traced = Run(input_shapes=list(input_shapes))
                self._record(traced, inputs)
                if (traced.error is None) == (run.error is None):
                    run.shapes, run.operands = traced.shapes, traced.operands
                    run.broadcasts = traced.broadcasts
                    if traced.error == run.error:
                        run.error_node = traced.error_node
                else:
                    run.traced_differs = True
        del inputs
        return run

    def _input(self, shape: tuple[int, ...], i: int) -> Any:
        """A random input of the example's dtype (integer inputs, token ids, get zeros)."""
        torch = self.torch
        dtypes = self.g.graph.get("input_dtypes") or []
        dtype = getattr(torch, dtypes[i], None) if i < len(dtypes) else None
        if isinstance(dtype, torch.dtype) and not dtype.is_floating_point:
            return torch.zeros(shape, dtype=dtype, device=self.device)
        return torch.randn(shape, device=self.device)

    def _record(self, run: Run, inputs: list[Any]) -> None:
        """Run the fx graph, recording every mapped node's real shapes (and the failing node)."""
        if self._gm is False:
            raise RuntimeError("no fx graph to run")
        interp = _recording_interpreter()(self._gm, self.fx_names, self.g, run)
        try:
            interp.run(*inputs)
        except _NodeFailed as failed:
            run.error, run.error_node = failed.reason, failed.ir_node
        finally:
            interp.env.clear()

    # --- checkerboard -------------------------------------------------------------------------

    def _transposed_ones(self, kernel, stride, padding, dilation, output_padding, lengths):
        """The output (numpy) of a 1-in/1-out transposed conv, weights 1, no bias, on ones."""
        torch = self.torch
        conv_cls = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d,
                    3: torch.nn.ConvTranspose3d}[len(kernel)]
        layer = conv_cls(1, 1, kernel, stride, padding=padding, dilation=dilation,
                         output_padding=output_padding, bias=False)
        layer = layer.to(self.device, torch.float64)
        with torch.no_grad():
            layer.weight.fill_(1.0)
            out = layer(torch.ones((1, 1, *lengths), dtype=torch.float64, device=self.device))
        values = out[0, 0].cpu().numpy()
        del layer, out
        return values

    # --- receptive field ----------------------------------------------------------------------

    def measure_rf(self, probes: list[RFProbe]) -> dict[str, Any]:
        """Backprop one unit of a float64, positive-weight, average-pool copy and compare the
        extent of the nonzero input gradient with the pass's exact bounds for that unit."""
        torch = self.torch
        node = probes[0].node
        targets = [fx for fx, ir in self.fx_names.items() if ir == node]
        if not targets:
            return {"node": node, "status": "not-checked", "note": "no traced op to read"}
        target = node if node in targets else targets[-1]
        global_nodes = global_ancestors(self.g, node)
        detach = {fx for fx, ir in self.fx_names.items() if ir in set(global_nodes)}
        # MPS has no float64: probe there on the CPU.
        device = torch.device("cpu") if self.device.type == "mps" else self.device
        gm = self.graph_module(_positive_copy(copy.deepcopy(self.module()), torch).to(device))
        fields = rf_fields(self.g, node) or ()
        try:
            for probe in probes:
                unit, support = self._gradient_support(gm, target, probe, fields, detach, device)
                if unit is None:
                    continue  # the sweep did not know the map's size, and no unit fit
                placed = RFProbe(node, probe.sides, unit)
                out = rf_verdict(self.g, placed, unit, support)
                if global_nodes:
                    out = self._with_global_branches(out, gm, target, placed, fields, device,
                                                     global_nodes)
                return out
            tried = ", ".join("x".join(map(str, p.sides)) for p in probes)
            return {"node": node, "status": "not-checked",
                    "note": f"at input {tried} no unit's predicted field lies inside the input"}
        finally:
            del gm
            if device.type == "cuda":
                torch.cuda.empty_cache()

    def measure_global(self, node: str) -> dict[str, Any]:
        """One output value of the real model (float64, its own weights) backpropagated: the
        pass says it reads every input pixel, so every pixel must get a nonzero gradient."""
        torch = self.torch
        device = torch.device("cpu") if self.device.type == "mps" else self.device
        model = copy.deepcopy(self.module()).double().eval().to(device)
        gen = torch.Generator().manual_seed(0)
        inputs = [torch.randn(s, generator=gen, dtype=torch.float64).to(device)
                  for s in self.example_shapes]
        x = inputs[0].requires_grad_(True)
        out = model(*inputs)
        out = getattr(out, "last_hidden_state", out)
        leaves = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not leaves or not leaves[0].is_floating_point():
            return {"node": node, "status": "not-checked", "note": "no float output to probe"}
        flat = leaves[0].reshape(-1)
        flat[flat.numel() // 2].backward()
        if x.grad is None:
            reached, total = 0, x[0, 0].numel()
        else:
            mask = (x.grad[0] != 0).any(0)
            reached, total = int(mask.sum()), mask.numel()
        cause = self.g.nodes[node].get("rf_global_cause")
        if reached == total:
            return {"node": node, "status": "confirmed",
                    "note": f"one output value reads all {total} input pixels (global since "
                            f"{cause})"}
        return {"node": node, "status": "refuted",
                "note": f"one output value reads {reached} of {total} input pixels, but the "
                        f"pass says global since {cause}: archlint bug"}

    def _gradient_support(self, gm: Any, target: str, probe: RFProbe, fields: tuple,
                          detach: set[str], device: Any) -> tuple[tuple[int, ...] | None, Any]:
        """(unit, per-axis nonzero-gradient bounds) of one backward pass; unit None when the
        probe left it open and no unit of the real map fits the input."""
        torch = self.torch
        shapes = self.shapes_at(probe.sides)
        x = torch.ones(shapes[0], dtype=torch.float64, device=device, requires_grad=True)
        others = [torch.ones(s, dtype=torch.float64, device=device) for s in shapes[1:]]
        with _AveragePools(torch):
            fmap = _run_until(gm, target, [x, *others], detach)
        unit = probe.unit
        if unit is None:
            picked = tuple(probe_unit(f, m, s, RF_MARGIN)
                           for f, m, s in zip(fields, fmap.shape[2:], probe.sides))
            if any(j is None for j in picked):
                return None, None
            unit = picked  # type: ignore[assignment]
        fmap[(0, 0, *unit)].backward()
        if x.grad is None:  # the map does not depend on this input at all
            return unit, None
        mask = (x.grad[0] != 0).any(0).cpu().numpy()
        del fmap, x, others
        return unit, support_bounds(mask)

    def _with_global_branches(self, out: dict[str, Any], gm: Any, target: str, probe: RFProbe,
                              fields: tuple, device: Any, global_nodes: list[str]) -> dict[str, Any]:
        """The pass leaves globally pooled branches (SE gates, image pooling) out of the field
        and marks them ``rf_global``: check that with them the unit reads the whole input."""
        _, support = self._gradient_support(gm, target, probe, fields, set(), device)
        whole = tuple((0, s - 1) for s in probe.sides)
        shown = ", ".join(global_nodes[:3]) + (", ..." if len(global_nodes) > 3 else "")
        if support == whole:
            seen = "with them the unit reads the whole input, as rf_global says"
        else:
            out["status"] = "refuted"
            seen = f"with them the unit reads {support}, not the whole input {whole}"
        out["note"] = (f"the globally pooled branches ({shown}) were detached, since the pass "
                       f"leaves them out of the local field; {seen}. " + out.get("note", "")).strip()
        return out


def _defaults_past(module: Any, n_inputs: int) -> dict[str, Any] | None:
    """forward's parameters past the given inputs, at their defaults (as the frontend traces)."""
    import inspect

    params = list(inspect.signature(module.forward).parameters.values())
    concrete = {p.name: p.default for p in params[n_inputs:]
                if p.default is not inspect.Parameter.empty}
    return concrete or None




class _NodeFailed(Exception):
    def __init__(self, ir_node: str | None, reason: str) -> None:
        super().__init__(reason)
        self.ir_node, self.reason = ir_node, reason


class _StopAt(Exception):
    def __init__(self, value: Any) -> None:
        self.value = value


@functools.lru_cache(maxsize=None)
def _recording_interpreter():
    import torch
    from torch.utils._pytree import tree_leaves

    class RecordingInterpreter(torch.fx.Interpreter):
        """Runs the traced graph and records every mapped node's real shapes into a Run."""

        def __init__(self, gm, fx_names: dict[str, str], g, run: Run) -> None:
            super().__init__(gm)
            self.extra_traceback = False
            self.fx_names, self.g, self.record = fx_names, g, run

        def run_node(self, n):
            ir = self.fx_names.get(n.name)
            if ir is not None and n.op not in ("placeholder", "get_attr"):
                args, kwargs = self.fetch_args_kwargs_from_env(n)
                operands = [tuple(t.shape) for t in tree_leaves((args, kwargs))
                            if isinstance(t, torch.Tensor)]
                self.record.operands[ir] = operands
            try:
                result = super().run_node(n)
            except Exception as exc:
                raise _NodeFailed(ir or n.name, _one_line(exc)) from None
            if ir is not None and n.op not in ("placeholder", "get_attr"):
                # It ran although the operands' spatial sizes differ: a silent broadcast.
                operands = self.record.operands[ir]
                if self.g.nodes[ir]["op"] in ELEMENTWISE_MERGES and differing_spatial(operands):
                    self.record.broadcasts[ir] = operands
            # The fx node named like the IR node is the op itself; others (getitem aliases)
            # only fill in when it gave nothing.
            if ir is not None and (n.name == ir or ir not in self.record.shapes):
                shapes = tuple(tuple(t.shape) for t in tree_leaves(result)
                               if isinstance(t, torch.Tensor))
                if shapes:
                    self.record.shapes[ir] = shapes
            return result

    return RecordingInterpreter




def _materialize(module: Any) -> Any:
    """Give a meta-device model real random weights: fresh storage, then each layer's own
    ``reset_parameters`` (the same initialization a CPU-built model gets)."""
    module = module.to_empty(device="cpu")
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
    return module


def _positive_copy(module: Any, torch: Any) -> Any:
    """``module`` in float64 with every weight a positive constant and biases 0, so each input
    pixel inside the receptive field reaches the output with a nonzero gradient."""
    nn = torch.nn
    module = module.double().eval().requires_grad_(False)  # only the input's gradient is read
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear)):
                # 1/fan-in keeps activations O(1) through deep nets (no overflow, no underflow).
                sub.weight.fill_(1.0 / max(1, sub.weight[0].numel()))
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.modules.batchnorm._NormBase):
                if sub.track_running_stats and sub.running_mean is not None:
                    sub.reset_running_stats()
                if sub.affine:
                    sub.weight.fill_(1.0)
                    sub.bias.zero_()
    return module


def _run_until(gm: Any, fx_name: str, inputs: list, detach: set[str] = frozenset()) -> Any:
    """Run only what the fx node ``fx_name`` depends on and return its value (autograd on),
    cutting the gradient at the fx nodes in ``detach``. A branch that fails at this input
    size but does not feed ``fx_name`` is never run."""
    import torch
    from torch.utils._pytree import tree_map

    def cut(value: Any) -> Any:
        return value.detach() if isinstance(value, torch.Tensor) else value

    needed = _fx_ancestors(gm, fx_name)

    class Truncated(torch.fx.Interpreter):
        def run_node(self, n):
            if n.name not in needed and n.op != "placeholder":
                return None
            value = super().run_node(n)
            if n.name in detach:
                value = tree_map(cut, value)
            if n.name == fx_name:
                raise _StopAt(value)
            return value

    interp = Truncated(gm)
    interp.extra_traceback = False
    try:
        interp.run(*inputs)
    except _StopAt as stop:
        return stop.value
    finally:
        interp.env.clear()
    raise RuntimeError(f"{fx_name} was never reached")


def _fx_ancestors(gm: Any, fx_name: str) -> set[str]:
    """Names of the fx node ``fx_name`` and every node it reads, directly or not."""
    by_name = {n.name: n for n in gm.graph.nodes}
    if fx_name not in by_name:
        raise RuntimeError(f"{fx_name} is not in the traced graph")
    seen, stack = set(), [by_name[fx_name]]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(n.all_input_nodes)
    return seen


class _AveragePools:
    """A TorchFunctionMode for the receptive-field probe: max pools become average pools of the
    same geometry (every window pixel gets gradient), and pointwise activations and norms that
    could saturate or mix the whole map become identities (the RF treats them as pointwise)."""

    def __init__(self, torch: Any) -> None:
        from torch.overrides import TorchFunctionMode

        F = torch.nn.functional
        pools = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3}
        adaptive = {F.adaptive_max_pool1d: F.adaptive_avg_pool1d,
                    F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
                    F.adaptive_max_pool3d: F.adaptive_avg_pool3d}
        identities = {
            F.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu,
            F.mish, F.hardswish, F.hardsigmoid, F.sigmoid, F.tanh, F.softplus, F.dropout,
            F.dropout1d, F.dropout2d, F.dropout3d, F.group_norm, F.layer_norm, F.instance_norm,
            torch.relu, torch.relu_, torch.sigmoid, torch.tanh, torch.clamp, torch.clip,
            torch.Tensor.relu, torch.Tensor.relu_, torch.Tensor.sigmoid, torch.Tensor.tanh,
            torch.Tensor.clamp, torch.Tensor.clamp_, torch.Tensor.clip,
        }
        def as_average(dims: int, args: tuple, kwargs: dict) -> Any:
            a = dict(_MAX_POOL_DEFAULTS, **dict(zip(_MAX_POOL_PARAMS, args)), **kwargs)
            stride = a["stride"] if a["stride"] not in (None, []) else a["kernel_size"]
            dilation = _tuple(a["dilation"], dims)
            if all(d == 1 for d in dilation):
                avg = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
                out = avg(a["input"], a["kernel_size"], stride, a["padding"], a["ceil_mode"])
            else:  # avg pools have no dilation: a depthwise all-ones conv of the same geometry
                x = a["input"]
                kernel = _tuple(a["kernel_size"], dims)
                weight = x.new_ones((x.shape[1], 1, *kernel))
                conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
                out = conv(x, weight, None, stride, a["padding"], dilation, x.shape[1])
            return (out, None) if a["return_indices"] else out

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in pools:
                    return as_average(pools[func], args, kwargs)
                if func in adaptive:
                    return adaptive[func](args[0] if args else kwargs["input"],
                                          args[1] if len(args) > 1 else kwargs["output_size"])
                if func in identities:
                    return args[0] if args else kwargs["input"]
                return func(*args, **kwargs)

        self.mode = Mode()

    def __enter__(self) -> "_AveragePools":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


#: F.max_poolNd's parameters, in order, and their defaults.
_MAX_POOL_PARAMS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                    "return_indices")
_MAX_POOL_DEFAULTS = {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False,
                      "return_indices": False}


def _tuple(value: Any, n: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * n
