"""Example inputs: ``--input-shape``, ``example_input`` in the file, ``[tool.archlint]``, else a shape
inferred from the first layer."""


from __future__ import annotations

import re
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


_NO_FILE_INPUT = object()


def _file_example_input(namespace: types.ModuleType) -> Any:
    return getattr(namespace, "example_input", _NO_FILE_INPUT)


def _chosen_inputs(
    options: Options, example_inputs: Any, file_input: Any
) -> list[InputSpec] | str | None:
    """The example input by precedence: ``--input-shape``, the API's ``example_inputs``, the
    file's ``example_input``, ``[tool.archlint]``; ``None`` means infer it from the first layer,
    and a string says why the given input is unusable."""
    config_shapes = _config_input_shapes(options)
    cli_shapes = options.input_shapes if options.input_shapes != config_shapes else None
    if cli_shapes:
        return [InputSpec(tuple(s)) for s in cli_shapes]
    if example_inputs is not None:
        return _specs_from_value(example_inputs, "example_inputs")
    if file_input is not _NO_FILE_INPUT and file_input is not None:
        return _specs_from_value(file_input, "example_input")
    if config_shapes:
        return [InputSpec(tuple(s)) for s in config_shapes]
    return None


def _config_input_shapes(options: Options) -> tuple[tuple[int, ...], ...] | None:
    """The input shapes ``[tool.archlint]`` gives, to rank them below ``example_input``."""
    if not options.config_file:
        return None
    try:
        return load_config(path=Path(options.config_file)).input_shapes
    except Exception:
        return None


def _specs_from_value(value: Any, what: str) -> list[InputSpec] | str:
    if isinstance(value, torch.Tensor):
        return [InputSpec(tuple(value.shape), value.dtype)]
    if _is_shape(value):
        return [InputSpec(tuple(int(d) for d in value))]
    if isinstance(value, (tuple, list)) and value:
        specs = []
        for item in value:
            if isinstance(item, torch.Tensor):
                specs.append(InputSpec(tuple(item.shape), item.dtype))
            elif _is_shape(item):
                specs.append(InputSpec(tuple(int(d) for d in item)))
            else:
                return _bad_input(what, item)
        return specs
    return _bad_input(what, value)


def _bad_input(what: str, value: Any) -> str:
    return (
        f"{what} must be a tensor, a tuple of tensors, or shape tuple(s); "
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
