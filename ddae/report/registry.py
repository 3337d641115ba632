"""The report registry: every table and figure of the paper this pipeline writes, by name.

An entry names its writer as an importable ``"module:function"`` (imported only when the table
is written, so that Snakemake, which reads this registry on every parse, imports neither torch
nor matplotlib), the kind of its outputs (a table: results/<name>.csv and .md; a figure:
results/<name>.png and .pdf) and the writer's fixed keyword arguments. The workflow makes one
rule per entry, named as the entry (workflow/rules/report.smk): its params are the writer's
other keyword arguments — the result files it reads and the config it shows, from its
``@params_of`` function in ddae/pipeline/report_inputs.py — and every such rule runs the one script
workflow/scripts/report.py, which calls `write_report`. A caption workflow/report/<name>.rst,
where there is one, goes with the table into ``snakemake --report``.

Adding a table therefore touches three files: its writer (a function taking its params and its
outputs as keyword arguments, e.g. ``csv`` and ``md``), a `register` line below, and its
``@params_of`` function in ddae/pipeline/report_inputs.py (plus, optionally, its caption).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OutputKind:
    """What a report writes: results/<name>.<ext> for each extension (the first one goes into
    the HTML report under ``category``)."""

    category: str
    extensions: tuple[str, ...]


TABLE = OutputKind("Tables", ("csv", "md"))
FIGURE = OutputKind("Figures", ("png", "pdf"))


@dataclass(frozen=True)
class Report:
    name: str
    writer: str | Callable[..., Any]  # "module:function", or the function itself
    kind: OutputKind = TABLE
    args: Mapping[str, Any] = field(default_factory=dict)  # fixed keyword arguments

    def outputs(self) -> dict[str, str]:
        """Output name (the writer's keyword) -> path."""
        return {ext: f"results/{self.name}.{ext}" for ext in self.kind.extensions}

    def function(self) -> Callable[..., Any]:
        if callable(self.writer):
            return self.writer
        module, _, attribute = self.writer.partition(":")
        return getattr(importlib.import_module(module), attribute)


REPORTS: dict[str, Report] = {}


def register(
    name: str, writer: str | Callable[..., Any], kind: OutputKind = TABLE, /, **args: Any
) -> Report:
    """Add a table or figure: ``writer(**args, **params, **outputs)`` writes it."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"report name {name!r}: use lower-case letters, digits and _")
    if name in REPORTS:
        raise ValueError(f"report {name!r} is registered twice")
    if isinstance(writer, str) and not re.fullmatch(r"[\w.]+:\w+", writer):
        raise ValueError(f"report {name!r}: writer {writer!r} is not 'module:function'")
    REPORTS[name] = Report(name, writer, kind, dict(args))
    return REPORTS[name]


def report_targets() -> list[str]:
    """Every registered table's and figure's output files."""
    return [path for entry in REPORTS.values() for path in entry.outputs().values()]


def write_report(name: str, params: Mapping[str, Any], outputs: Mapping[str, str]) -> None:
    """Write the registered table or figure ``name``: its writer gets ``params`` (the workflow's
    params of its rule) and ``outputs`` (output name -> path) as keyword arguments."""
    if name not in REPORTS:
        raise ValueError(f"unknown table or figure {name!r} (registered: {sorted(REPORTS)})")
    entry = REPORTS[name]
    if set(outputs) != set(entry.kind.extensions):
        raise ValueError(f"{name}: outputs {sorted(outputs)}, expected {entry.kind.extensions}")
    entry.function()(**entry.args, **params, **outputs)


# The paper's tables and figures (paper section in each writer's module docstring).
register("table2", "ddae.report.comparison:write_comparison_table", name="table2")
register("table3", "ddae.report.comparison:write_comparison_table", name="table3")
register("table4", "ddae.report.comparison:write_comparison_table", name="table4")
register("table5", "ddae.report.table5:write_table5")
register("table6", "ddae.report.settings:write_settings_table", table="table6")
register("table7", "ddae.report.settings:write_settings_table", table="table7")
register("table8", "ddae.report.settings:write_settings_table", table="table8")
register("table9", "ddae.report.table9:write_table9")
register("layer_choice", "ddae.report.layer_choice:write_label_free_table")
register("figure2", "ddae.report.figures:figure2", FIGURE)
register("figure3", "ddae.report.figures:figure3", FIGURE)
register("figure4", "ddae.report.figures:figure4", FIGURE)
register("figure5", "ddae.report.figures:figure5", FIGURE)
register("figure6", "ddae.report.figures:figure6", FIGURE)
