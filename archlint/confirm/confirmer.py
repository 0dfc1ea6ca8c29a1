"""The per-finding logic, independent of the runtime."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from archlint.confirm.predictions import (
    CHECKERBOARD_RULE,
    MAX_PROBE_PIXELS,
    SIZE_DEPENDENT_RULES,
    RFProbe,
    Run,
    _shapes_text,
    _transposed_geometry,
    axis_names,
    axis_pattern,
    block_pattern,
    confirmed,
    describe_pattern,
    failure_reached,
    fed_layers,
    finding_nodes,
    global_claim,
    input_length_for_pattern,
    nearest,
    nearest_admissible,
    not_checked,
    refuted,
    resize,
    rf_probes,
    rf_sizes,
    rf_text,
    shape_mismatches,
    size_candidates,
    spatial_rf_nodes,
    swept_admissible,
)
from archlint.graph import spatial

if TYPE_CHECKING:
    import networkx as nx
    from archlint.findings import Finding

class _Confirmer:
    """The checks; subclasses supply how to run the model and the layer."""

    g: "nx.DiGraph"
    max_probe_pixels: int = MAX_PROBE_PIXELS

    @property
    def example_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(s) for s in self.g.graph.get("input_shapes", [])]

    def run_at(self, input_shapes: list[tuple[int, ...]]) -> Run:
        raise NotImplementedError

    def checkerboard_patterns(self, node: str) -> list[tuple[str, list[float], int]]:
        a = self.g.nodes[node]["attrs"]
        n = len(a.kernel)
        geometry = _transposed_geometry(a)
        patterns = []
        for axis, (k, s, d, p, op) in zip(axis_names(n), geometry):
            length = input_length_for_pattern(k, s, d, p)
            line = self._transposed_ones((k,), (s,), (p,), (d,), (op,), (length,))
            patterns.append((axis, *axis_pattern(line, k, s, p, d, length)))
        if n > 1:
            k, s, d, p, op = (tuple(v) for v in zip(*geometry))
            lengths = tuple(input_length_for_pattern(*g) for g in zip(k, s, d, p))
            patterns.append(("all", block_pattern(self._transposed_ones(k, s, p, d, op, lengths),
                                                  k, s, p, d, lengths), 0))
        return patterns

    def _transposed_ones(self, kernel, stride, padding, dilation, output_padding, lengths):
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------

    def confirm(self, findings: list["Finding"]) -> dict[str, Any]:
        self._runs = {}
        summary: dict[str, Any] = {}
        example = self.cached_run(self.example_shapes)
        mismatched, compared, shown = shape_mismatches(self.g, example)
        summary["shape_mismatches"] = mismatched
        summary["shapes_compared"] = compared
        if mismatched:
            summary["shape_errors"] = shown
            summary["note"] = (f"archlint bug: {mismatched} predicted shape(s) differ from the "
                               "real ones (please report it)")
        if example.error:
            summary["example_error"] = example.error
        if example.traced_differs:
            summary["traced_differs"] = (
                "the traced graph and the real forward disagree at the example (a tracing "
                f"artefact; the real forward {'raised' if example.error else 'ran'}): every "
                "verdict comes from the real forward")
        rf = self.confirm_rf(self.max_probe_pixels)
        summary["receptive_field"] = rf
        if rf is not None:
            summary["rf"] = rf_text(rf)
        for f in findings:
            try:
                f.confirmation = self.confirm_finding(f, example)
            except Exception as exc:  # one check must not hide the others
                f.confirmation = not_checked(f"confirm failed: {type(exc).__name__}: {exc}")
        return summary

    def cached_run(self, input_shapes: list[tuple[int, ...]]) -> Run:
        key = tuple(input_shapes)
        if not hasattr(self, "_runs"):
            self._runs = {}
        if key not in self._runs:
            self._runs[key] = self.run_at(list(input_shapes))
        return self._runs[key]

    def confirm_finding(self, f: "Finding", example: Run) -> dict[str, str]:
        if f.rule == CHECKERBOARD_RULE:
            return self.confirm_checkerboard(f)
        if f.rule in SIZE_DEPENDENT_RULES:
            return self.confirm_size_dependent(f, example)
        return not_checked("this rule's prediction has no runtime check")

    # --- checkerboard -------------------------------------------------------------------------

    def confirm_checkerboard(self, f: "Finding") -> dict[str, str]:
        nodes = [n for n in finding_nodes(self.g, f) if self.g.nodes[n]["op"] == "conv_transpose"]
        if not nodes:
            return not_checked("no transposed convolution at this location")
        patterns = self.checkerboard_patterns(nodes[0])
        texts = [describe_pattern(axis, p, phase) for axis, p, phase in patterns]
        uneven = [p for _, p, _ in patterns if max(p) != min(p)]
        run_alone = "the layer alone (weights 1, constant input): "
        if uneven:
            return confirmed(run_alone + "; ".join(texts))
        return refuted(run_alone + "even coverage: " + "; ".join(texts))

    # --- size-dependent -----------------------------------------------------------------------

    def confirm_size_dependent(self, f: "Finding", example: Run) -> dict[str, str]:
        nodes = finding_nodes(self.g, f)
        node = nodes[0] if nodes else None
        sweep = self.g.graph.get("sizes")
        spatial_example = spatial(self.example_shapes[0]) if self.example_shapes else None
        if spatial_example is None:
            return not_checked("the input has no spatial axes to vary")
        if f.rule == "odd-size-stride2":
            return self.confirm_rounding(node, example, size_candidates(sweep, node)[0],
                                         spatial_example)

        # A flatten fails where the layer it feeds gets the wrong feature count.
        flatten = f.rule == "hardcoded-flatten"
        watched = fed_layers(self.g, nodes) if flatten else nodes
        downstream = f.rule == "spatial-collapse"
        failing, admissible = size_candidates(sweep, watched)
        sweep_note = ""
        if flatten and not failing:
            # A flatten tied to one size fails at any other: twice the example will do.
            doubled = tuple(2 * d for d in spatial_example)
            size = doubled[0] if len(set(doubled)) == 1 else doubled
            failing = [size]
            if swept_admissible(sweep, size):
                sweep_note = (f"; the size sweep names no failing size and calls {size} "
                              "admissible (archlint bug in the sizes pass)")
        evidence = failure_reached(self.g, example, watched, downstream)
        fail_run = example
        if evidence is None and failing:
            fail_run = self.cached_run(self.shapes_at(nearest(failing, spatial_example)))
            evidence = failure_reached(self.g, fail_run, watched, downstream)
        if evidence is None and f.rule == "spatial-collapse":
            evidence = self.collapse_seen(nodes, fail_run)
        tried = sorted({example.size_text, fail_run.size_text})
        admissible_note = self.admissible_note(admissible, spatial_example)
        if evidence is not None:
            return confirmed(evidence + admissible_note + (sweep_note if fail_run.error else ""))
        if fail_run is example and not failing:
            return not_checked(
                f"it runs at the example input {example.size_text}; the size sweep names no "
                "failing size to try" + admissible_note
            )
        return refuted(f"ran cleanly at input {' and '.join(tried)}" + admissible_note)

    def confirm_rounding(self, node: str | None, example: Run, failing: list,
                         spatial_example: tuple[int, ...]) -> dict[str, str]:
        if node is None:
            return not_checked("the finding's op is not in the graph")
        stride = self.g.nodes[node]["attrs"].stride
        runs = [example]
        if failing:
            runs.append(self.cached_run(self.shapes_at(nearest(failing, spatial_example))))
        for run in runs:
            seen = _rounding_seen(run, node, stride)
            if seen:
                return confirmed(f"at input {run.size_text}: {seen}")
        observed = [r for r in runs if node in r.operands and node in r.shapes]
        if not observed:
            return not_checked("the op's real sizes were not observed")
        r = observed[-1]
        return refuted(f"at input {r.size_text} {node} saw "
                       f"{_shapes_text(r.operands[node][:1])} -> {_shapes_text(r.shapes[node][:1])}: "
                       "every strided axis divides evenly")

    def collapse_seen(self, nodes: list[str], run: Run) -> str | None:
        for n in nodes:
            out = run.shapes.get(n)
            sp = spatial(out[0]) if out else None
            if sp is not None and any(d <= 1 for d in sp):
                return f"at input {run.size_text} {n} really outputs {_shapes_text(out[:1])}"
        return None

    def admissible_note(self, admissible: list, spatial_example: tuple[int, ...]) -> str:
        if not admissible:
            return ""
        size = nearest_admissible(self.g.graph.get("sizes"), admissible, spatial_example)
        run = self.cached_run(self.shapes_at(size))
        if run.error is None:
            return f"; at the predicted-admissible input {run.size_text} it runs"
        return (f"; but at the predicted-admissible input {run.size_text} it raised too "
                f"(archlint bug): {run.error}")

    def shapes_at(self, size: Any) -> list[tuple[int, ...]]:
        """Batch-1 input shapes at ``size``; other inputs of the same spatial size follow."""
        first = self.example_shapes[0]
        out = []
        for shape in self.example_shapes:
            if len(shape) == len(first) and shape[2:] == first[2:]:
                out.append(resize(shape, size))
            else:
                out.append((1, *shape[1:]))
        return out

    # --- receptive field ----------------------------------------------------------------------

    def confirm_rf(self, max_pixels: int = MAX_PROBE_PIXELS) -> dict[str, Any] | None:
        """The last local map's field (below), and a global claim on the output (attention):
        confirmed only when one output value's gradient reaches every input pixel."""
        local = self.confirm_local_rf(max_pixels)
        node = global_claim(self.g)
        if node is None:
            return local
        try:
            verdict = self.measure_global(node)
        except Exception as exc:
            verdict = {"node": node, "status": "not-checked",
                       "note": f"probe failed: {type(exc).__name__}: {exc}"}
        verdict["kind"] = "global"
        if local is None:
            return verdict
        local["global"] = verdict
        return local

    def measure_global(self, node: str) -> dict[str, Any]:
        return {"node": node, "status": "not-checked", "note": "no gradient on this runtime"}

    def confirm_local_rf(self, max_pixels: int = MAX_PROBE_PIXELS) -> dict[str, Any] | None:
        """Measure the field of the last spatial map, or of the deepest one whose probe input
        fits ``max_pixels`` (a 1400-pixel field would need a 2800x2800 float64 run)."""
        nodes = spatial_rf_nodes(self.g)
        if not nodes:
            return None
        for node in reversed(nodes):
            probes = list(rf_probes(self.g, node, max_pixels))
            if probes:
                break
        else:
            last = nodes[-1]
            return {"node": last, "status": "not-checked",
                    "note": f"no input of at most {max_pixels} pixels holds the predicted field "
                            f"of any map (the last, {last}, has r "
                            f"{'x'.join(map(str, rf_sizes(self.g.nodes[last]['rf']) or ()))})"}
        out = self.confirm_rf_at(node, probes)
        if node != nodes[-1]:
            last = "x".join(map(str, rf_sizes(self.g.nodes[nodes[-1]]["rf"]) or ()))
            out["note"] = (f"measured at {node}, the deepest map whose probe fits {max_pixels} "
                           f"input pixels; the last map {nodes[-1]} has a predicted r of {last}. "
                           + out.get("note", "")).strip()
        return out

    def confirm_rf_at(self, node: str, probes: list[RFProbe] | None = None,
                      max_pixels: int = MAX_PROBE_PIXELS) -> dict[str, Any]:
        """Probe ``node``'s field (at the given probes, else the planned ones)."""
        if probes is None:
            probes = list(rf_probes(self.g, node, max_pixels))
        if not probes:
            return {"node": node, "status": "not-checked",
                    "note": f"no input of at most {max_pixels} pixels holds its predicted field"}
        try:
            return self.measure_rf(probes)
        except Exception as exc:
            return {"node": node, "status": "not-checked",
                    "note": f"probe failed: {type(exc).__name__}: {exc}"}

    def measure_rf(self, probes: list[RFProbe]) -> dict[str, Any]:
        raise NotImplementedError


def _rounding_seen(run: Run, node: str, stride: tuple[int, ...]) -> str | None:
    """'57x57 -> 29x29: 57/2 rounded' when a strided axis of the op's real input does not divide."""
    operands, outs = run.operands.get(node), run.shapes.get(node)
    if not operands or not outs:
        return None
    sp_in, sp_out = spatial(operands[0]), spatial(outs[0])
    if sp_in is None or sp_out is None or len(stride) != len(sp_in):
        return None
    uneven = [(i, s) for i, (i_, s) in enumerate(zip(sp_in, stride)) if s > 1 and sp_in[i] % s]
    if not uneven:
        return None
    parts = ", ".join(
        f"{sp_in[i]}/{s} = {sp_in[i] / s:g} became {sp_out[i]}" for i, s in uneven
    )
    return (f"{node} really maps {'x'.join(map(str, sp_in))} -> {'x'.join(map(str, sp_out))} "
            f"({parts})")
