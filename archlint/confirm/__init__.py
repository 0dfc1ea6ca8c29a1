"""Confirm on a device: run the model and mark each prediction confirmed or refuted.

``archlint model.py --confirm [--device DEV]`` calls :func:`confirm_report` on every ModelReport
after the static analysis. It never runs unless asked, and it only runs what it needs: batch 1
where it picks the size, the example input once, one failing and one admissible size per
size-dependent finding, one transposed-conv layer alone per checkerboard finding, and one
backward pass for the receptive field.

What it checks (each finding gets ``confirmation = {"status", "detail"}``; the model gets
``confirm = {"device", "shape_mismatches", "receptive_field", "seconds", ...}``):

* shapes: one forward at the example input; every tensor's real shape against ``shapes``.
  Any mismatch is an archlint bug, and ``confirm["shape_errors"]`` lists the first few.
* size-dependent findings: a run at the failing size nearest the example (the sizes at which
  the sweep's ``invalid_at`` marks the finding's op, or for a flatten the layer it feeds; a
  flatten the sweep names no failing size for is run at twice the example, and the sweep's
  silence is reported as an archlint bug if it raises there). An error raised there, or a merge
  whose operand spatial sizes differ and broadcast silently, confirms it; a run at the nearest
  predicted-admissible size (``SizeSweep.nearest``) should work.
* ``kernel-stride-checkerboard``: the layer alone, weights 1, constant input; the periodic
  pattern of its interior output.
* receptive field: a float64 copy with positive weights (1/fan-in), biases 0, max pools turned
  into average pools of the same geometry and activations into identities; one backward pass
  from one output unit of the deepest spatial map whose predicted field fits an input of
  ``max_probe_pixels`` (512x512 by default). The input is the smallest square at which that
  map exists (the sweep says which) and a unit near its centre has its whole predicted field
  inside the input with RF_MARGIN pixels to spare; the probe runs only the ops the map depends
  on. The extent of the nonzero input gradient along each axis must equal, exactly, the pass's
  ``ReceptiveField.bounds(unit)`` for that unit: after transposed convs or upsampling units
  differ by phase, and the unit's own bounds (not r, the largest over a period) are what is
  compared. Globally pooled branches (``rf_global``: SE gates, image pooling), which the pass
  leaves out of the local field, are detached for that comparison; a second backward checks
  that with them the unit reads the whole input. A field the pass read off the example size
  (adaptive pool to t > 1, a resize to a given size) is probed at the example size only.
  Torch only: onnxruntime has no backward pass, so on ONNX it is reported as not measured.

``confirm`` keys: ``device``, ``shape_mismatches``, ``shapes_compared``, ``shape_errors`` and
``note`` (only when shapes differ), ``example_error`` (the example input raised),
``receptive_field`` (None without a spatial map, else ``{"node", "status", "note"?}`` and, when
measured, ``"input"``, ``"unit"``, ``"predicted"``/``"measured"`` (the unit's span per axis) and
``"predicted_bounds"``/``"measured_bounds"`` (first and last input pixel per axis)), ``rf`` (that
comparison in one line, for the text report), ``seconds``, and ``error`` when the model could
not be run at all.

Torch is imported only inside the torch path, onnxruntime only inside the ONNX path.

Files: ``predictions`` (verdicts, runs and the pure helpers both runtimes share), ``confirmer``
(the per-finding logic), ``torch_runner`` (PyTorch) and ``onnx_runner`` (onnxruntime; never
torch).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Iterable

from archlint.config import ConfigError
from archlint.confirm.onnx_runner import _OnnxConfirmer
from archlint.confirm.predictions import (  # the helpers tests and callers use
    MAX_PROBE_PIXELS,
    RF_MARGIN,
    RFProbe,
    _one_line,
    global_ancestors,
    global_claim,
    input_length_for_pattern,
    last_spatial_node,
    not_checked,
    periodic_pattern,
    probe_unit,
    rf_sizes,
    size_dependent_op,
    support_bounds,
    transposed_interior,
)
from archlint.confirm.torch_runner import _TorchConfirmer

if TYPE_CHECKING:
    from archlint.findings import Finding, ModelReport

__all__ = [
    "check_device", "confirm_report", "MAX_PROBE_PIXELS", "RF_MARGIN", "RFProbe",
    "global_ancestors", "global_claim", "input_length_for_pattern", "last_spatial_node",
    "periodic_pattern", "probe_unit", "rf_sizes", "size_dependent_op", "support_bounds",
    "transposed_interior",
]


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def check_device(device: str) -> None:
    """Raise ConfigError with a one-line reason unless ``device`` can run a model here."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(
            f"--device {device!r}: not a device name (try cpu, cuda, cuda:1, mps)"
        ) from None
    if dev.type == "cpu":
        return
    if dev.type == "meta":
        raise ConfigError("--device meta: confirm needs a device that computes values")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA GPU is available on this machine")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ConfigError(f"--device {device}: this machine has {count} CUDA device(s)")
        return
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"--device {device}: MPS is only available on Apple silicon macOS")
        return
    backend = getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ConfigError(f"--device {device}: no {dev.type} device is available")


def confirm_report(model_report: "ModelReport", device: str = "cpu", *,
                   max_probe_pixels: int = MAX_PROBE_PIXELS) -> None:
    """Run the model on ``device`` and fill ``model_report.confirm`` and each finding's
    ``confirmation``. Raises ConfigError when the device is not there. The receptive-field
    probe measures the deepest map whose field fits an input of ``max_probe_pixels``."""
    started = time.perf_counter()
    g = model_report.graph
    if g is None:
        model_report.confirm = {"device": device, "error": "no graph was built: nothing to run"}
        _mark_unchecked(model_report.findings, "the model could not be built")
        return
    onnx = model_report.frontend == "onnx"
    if not onnx:
        check_device(device)
    summary: dict[str, Any] = {"device": "cpu (onnxruntime)" if onnx else device}
    try:
        confirmer = _OnnxConfirmer(g) if onnx else _TorchConfirmer(g, device)
        confirmer.max_probe_pixels = max_probe_pixels
        summary.update(confirmer.confirm(model_report.findings))
    except Exception as exc:  # a model that cannot run is a result, not a crash
        summary["error"] = f"could not run the model: {_one_line(exc)}"
        _mark_unchecked(model_report.findings, summary["error"])
    summary["seconds"] = round(time.perf_counter() - started, 3)
    model_report.confirm = summary


def _mark_unchecked(findings: Iterable["Finding"], why: str) -> None:
    for f in findings:
        if f.confirmation is None:
            f.confirmation = not_checked(why)
