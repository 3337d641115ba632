"""The few lines a successful run ends with: which of the paper's tables and figures exist, where
they are, and how to open the report (the Snakefile's ``onsuccess``; README "Next steps").

Pure Python, no torch: the Snakefile imports it on every parse.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path


def _names(paths: Sequence[Path]) -> str:
    return ", ".join(path.stem for path in paths) or "none yet"


def run_summary(targets: Sequence[str], workdir: str | Path, directory: str | None = None) -> str:
    """Summary of the tables (``results/table*.md``) and figures (``results/figure*.png``) among
    ``targets`` that exist under ``workdir``. ``directory``: the ``--directory`` the run was
    given (None: none), which the paths and commands shown are spelt with."""
    workdir = Path(workdir)
    existing = [workdir / target for target in dict.fromkeys(targets)]
    existing = [path for path in existing if path.is_file()]
    tables = sorted(p for p in existing if p.suffix == ".md" and p.stem.startswith("table"))
    tables += sorted(p for p in existing if p.suffix == ".md" and not p.stem.startswith("table"))
    figures = sorted(p for p in existing if p.suffix == ".png")

    if directory and os.path.isabs(directory) and os.environ.get("PWD"):
        relative = os.path.relpath(directory, os.environ["PWD"])  # the shell's directory
        directory = relative if not relative.startswith("..") else directory
        directory = None if directory == "." else directory

    def shown(path: str) -> str:
        return os.path.join(str(directory), path) if directory else path

    option = f" --directory {shlex.quote(str(directory))}" if directory else ""
    lines = [
        "",
        f"Finished. The paper's tables and figures are in {shown('results')}/",
        f"  tables  ({len(tables)}): {_names(tables)}  -- read the .md files, data in the .csv",
        f"  figures ({len(figures)}): {_names(figures)}  -- .png and .pdf",
    ]
    if tables:
        # a miniature's findings say what its numbers show; else Table 3, the paper's headline
        first = next((p for p in tables if p.stem == "findings"), None)
        first = first or next((p for p in tables if p.stem == "table3"), tables[0])
        lines.append(f"  start with: {shown(f'results/{first.name}')}")
    lines += [
        "  one HTML report with every table and figure and its caption: "
        f"snakemake{option} --report report.html  (writes {shown('report.html')}; "
        "open it in a browser)",
        f"  what ran and what is up to date: snakemake{option} --summary",
        "",
    ]
    return "\n".join(lines)
