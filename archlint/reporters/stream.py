"""Where the CLI's report goes, and when: the text formats print each target as soon as it is
done; the others (json, sarif, github, html) are written once, at the end. After Ctrl-C the
targets that finished are reported, then ``interrupted``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

from archlint.findings import ModelReport, Report

STREAMED = ("text", "concise")


class ReportWriter:
    def __init__(self, args: Any) -> None:
        self.format = args.format
        self.output = getattr(args, "output", None)
        self.color = getattr(args, "color", None)
        self.options = {
            "show_layers": getattr(args, "show", None) == "layers",
            "statistics": bool(getattr(args, "statistics", False)),
            "depth": getattr(args, "depth", None),
            "color": self.color,
        }
        self.streaming = self.format in STREAMED and not self.options["statistics"]
        self._file: TextIO | None = None

    def __enter__(self) -> "ReportWriter":
        if self.output is not None:
            try:
                self._file = open(self.output, "w", encoding="utf-8")  # noqa: SIM115
            except OSError as exc:
                from archlint.config import ConfigError

                raise ConfigError(f"-o {self.output}: {exc.strerror or exc}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    @property
    def stream(self) -> TextIO:
        # Looked up each time: while a progress bar is live, rich routes sys.stdout above it.
        return self._file if self._file is not None else sys.stdout

    def add(self, models: list[ModelReport]) -> None:
        if not self.streaming:
            return
        from archlint.reporters.text import make_console, render_model, render_model_concise

        console = make_console(self.stream, self.color)
        for model in models:
            if self.format == "concise":
                render_model_concise(model, console)
            else:
                render_model(model, console, show_layers=self.options["show_layers"],
                             depth=self.options["depth"])
        self.stream.flush()

    def finish(self, report: Report, *, interrupted: bool = False) -> None:
        from archlint.api import gc_paused

        with gc_paused():  # report dicts hold no cycles; a collection over a large graph would
            if self.streaming:
                from archlint.reporters.text import make_console, print_summary

                print_summary(report, make_console(self.stream, self.color))
            else:
                from archlint.reporters import render

                render(report, self.format, self.stream, **self.options)
        self.stream.flush()
        if interrupted:
            print("interrupted", file=sys.stderr)
        elif self._file is not None and self.format == "html":
            print(f"archlint: wrote {Path(self.output).as_posix()}", file=sys.stderr)
