"""The source edit: set arguments of one constructor call, keeping every other byte.

libcst parses the file into a concrete syntax tree (comments, blank lines and spacing included),
``PositionProvider`` gives each call its line range, and only the ``value`` of the edited argument
(or one appended keyword argument) changes; the rest of the file is written back as it was.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Sequence

import warnings

with warnings.catch_warnings():  # libcst 1.0's type-inference module warns on import (mypy_extensions)
    warnings.simplefilter("ignore", DeprecationWarning)
    import libcst as cst
    from libcst.metadata import MetadataWrapper, PositionProvider

from archlint.fixes.model import CallEdit, Literal

#: The positional parameters of a layer class (``Conv2d`` -> in_channels, out_channels, ...), or
#: None when it is not a class archlint can read the signature of.
Signature = Callable[[str], "tuple[list[str], set[str]] | None"]


@dataclass
class EditedSource:
    text: str
    applied: list[CallEdit] = field(default_factory=list)
    #: Edit -> one-line reason it was left alone.
    refused: dict[CallEdit, str] = field(default_factory=dict)


def torch_layer_signature(callee: str) -> tuple[list[str], set[str]] | None:
    """(positional parameter names, all parameter names) of ``torch.nn.<callee>``."""
    import torch.nn as nn

    cls = getattr(nn, callee, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return None
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    positional = [p.name for p in params
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return positional, {p.name for p in params}


def edit_calls(text: str, edits: Sequence[CallEdit],
               signature: Signature = torch_layer_signature) -> EditedSource:
    """Apply each edit to the one call it names, or refuse it with a reason."""
    result = EditedSource(text)
    try:
        module = cst.parse_module(text)
    except cst.ParserSyntaxError as exc:
        reason = f"the file does not parse ({str(exc).splitlines()[0]})"
        result.refused = {e: reason for e in edits}
        return result
    wrapper = MetadataWrapper(module)
    positions = wrapper.resolve(PositionProvider)
    calls = [(node, positions[node]) for node in positions if isinstance(node, cst.Call)]

    plan: dict[cst.Call, dict[str, Literal]] = {}
    owners: dict[cst.Call, list[CallEdit]] = {}
    for edit in edits:
        try:
            call = _the_call(calls, edit)
            bound, names = _bound_arguments(call, edit, signature)
            _check_literal(bound, edit)
        except NotEditable as exc:
            result.refused[edit] = str(exc)
            continue
        values = plan.setdefault(call, {})
        clash = [n for n, v in edit.arguments if n in values and values[n] != v]
        if clash:
            result.refused[edit] = f"another fix sets {clash[0]} of the same call differently"
            continue
        values.update(edit.arguments)
        owners.setdefault(call, []).append(edit)

    if not plan:
        return result
    edited = wrapper.visit(_SetArguments(plan, signature))
    result.text = edited.code
    result.applied = [e for call in plan for e in owners[call]]
    return result


class NotEditable(Exception):
    """The call can't be edited safely; the message says why."""


def _callee_name(func: cst.BaseExpression) -> str | None:
    if isinstance(func, cst.Name):
        return func.value
    if isinstance(func, cst.Attribute):
        return func.attr.value
    return None


def _the_call(calls, edit: CallEdit) -> cst.Call:
    line = edit.location.line
    assert line is not None
    here = [(c, p) for c, p in calls if p.start.line <= line <= p.end.line]
    named = [c for c, _ in here if _callee_name(c.func) == edit.callee]
    if len(named) == 1:
        return named[0]
    if len(named) > 1:
        raise NotEditable(f"line {line} has {len(named)} {edit.callee}(...) calls; "
                          "which one built the layer is not known")
    starting = [_callee_name(c.func) or "a call" for c, p in here if p.start.line == line]
    if starting:
        raise NotEditable(f"line {line} builds the {edit.callee} inside {starting[0]}(...), "
                          f"not by a {edit.callee}(...) call; edit it where that is defined")
    raise NotEditable(f"no {edit.callee}(...) call at line {line}")


def _bound_arguments(call: cst.Call, edit: CallEdit, signature: Signature
                     ) -> tuple[dict[str, cst.Arg], set[str]]:
    """Parameter name -> the argument that passes it."""
    known = signature(edit.callee)
    if known is None:
        raise NotEditable(f"{edit.callee} is not a torch.nn layer whose signature archlint reads")
    positional, names = known
    unknown = [n for n, _ in edit.arguments if n not in names]
    if unknown:
        raise NotEditable(f"{edit.callee} takes no {unknown[0]} argument")
    bound: dict[str, cst.Arg] = {}
    for index, arg in enumerate(call.args):
        if arg.star:
            raise NotEditable(f"the call passes {arg.star}{_code(arg.value)}: which arguments "
                              "it sets is not known")
        if arg.keyword is not None:
            bound[arg.keyword.value] = arg
        elif index < len(positional):
            bound[positional[index]] = arg
        else:
            raise NotEditable(f"the call passes more positional arguments than {edit.callee} takes")
    return bound, names


def _check_literal(bound: dict[str, cst.Arg], edit: CallEdit) -> None:
    for name, _ in edit.arguments:
        if name in bound and not _is_literal(bound[name].value):
            raise NotEditable(f"{name} is set from an expression ({_code(bound[name].value)}), "
                              "not a literal")
    for name in edit.reads:
        if name in bound and not _is_literal(bound[name].value):
            raise NotEditable(f"the fix is computed from {name}, which is an expression here "
                              f"({_code(bound[name].value)}): the numbers could be wrong for "
                              "other layers this call builds")


def _is_literal(node: cst.BaseExpression) -> bool:
    if isinstance(node, (cst.Integer, cst.Float, cst.SimpleString)):
        return True
    if isinstance(node, cst.Name):
        return node.value in ("True", "False", "None")
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        return isinstance(node.expression, (cst.Integer, cst.Float))
    if isinstance(node, (cst.Tuple, cst.List)):
        return all(isinstance(e, cst.Element) and _is_literal(e.value) for e in node.elements)
    return False


def _code(node: cst.CSTNode) -> str:
    return cst.Module([]).code_for_node(node)


class _SetArguments(cst.CSTTransformer):
    def __init__(self, plan: dict[cst.Call, dict[str, Literal]], signature: Signature):
        super().__init__()
        self.plan = plan
        self.signature = signature

    def leave_Call(self, original_node: cst.Call, updated_node: cst.Call) -> cst.Call:
        values = self.plan.get(original_node)
        if values is None:
            return updated_node
        callee = _callee_name(original_node.func) or ""
        positional = (self.signature(callee) or ([], set()))[0]
        args = list(updated_node.args)
        for name, value in values.items():
            expr = cst.parse_expression(repr(value))
            index = _index_of(args, name, positional)
            if index is not None:
                args[index] = args[index].with_changes(value=expr)
            else:
                args = _append_keyword(args, name, expr, updated_node.whitespace_before_args)
        return updated_node.with_changes(args=args)


def _index_of(args: list[cst.Arg], name: str, positional: list[str]) -> int | None:
    for index, arg in enumerate(args):
        if arg.keyword is not None:
            if arg.keyword.value == name:
                return index
        elif index < len(positional) and positional[index] == name:
            return index
    return None


def _append_keyword(args: list[cst.Arg], name: str, expr: cst.BaseExpression,
                    before_args: cst.BaseParenthesizableWhitespace) -> list[cst.Arg]:
    """Add ``name=expr`` after the last argument, laid out as the call lays out its arguments;
    a comment after the old last argument stays on its line."""
    no_space = cst.SimpleWhitespace("")
    new = cst.Arg(value=expr, keyword=cst.Name(name),
                  equal=cst.AssignEqual(whitespace_before=no_space, whitespace_after=no_space))
    if not args:
        return [new]
    last = args[-1]
    earlier = next((a.comma.whitespace_after for a in reversed(args[:-1])
                    if isinstance(a.comma, cst.Comma)), before_args)
    separator = cst.Comma(whitespace_after=_blank_like(earlier))
    if not isinstance(last.comma, cst.Comma):
        return [*args[:-1], last.with_changes(comma=separator), new]
    # A trailing comma: the old last argument keeps its comma (and any comment after it), now
    # followed by the arguments' indent; the new argument takes the line break before ')'.
    trailing = last.comma.whitespace_after
    if isinstance(trailing, cst.ParenthesizedWhitespace):
        kept = last.comma.with_changes(whitespace_after=trailing.with_changes(
            indent=getattr(earlier, "indent", trailing.indent),
            last_line=getattr(earlier, "last_line", trailing.last_line)))
        closing = cst.Comma(whitespace_after=_blank_like(trailing))
        return [*args[:-1], last.with_changes(comma=kept), new.with_changes(comma=closing)]
    return [*args[:-1], last.with_changes(comma=separator), new.with_changes(comma=last.comma)]


def _blank_like(whitespace: cst.BaseParenthesizableWhitespace) -> cst.BaseParenthesizableWhitespace:
    """The same line break and indent, without a comment or blank lines; or one space."""
    if isinstance(whitespace, cst.ParenthesizedWhitespace):
        return cst.ParenthesizedWhitespace(first_line=cst.TrailingWhitespace(), empty_lines=[],
                                           indent=whitespace.indent, last_line=whitespace.last_line)
    return cst.SimpleWhitespace(" ")
