"""The workflow files hold rules (issue 21): the Python code left in the Snakefile and
workflow/rules/*.smk outside rule blocks — helpers, path layout, config checks — lives in
`ddae.pipeline`, where ruff, the repeated-code check and the tests see it. This file counts what
is left and keeps it at most `LIMIT` lines (about 640 before the move)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIMIT = 200

# A line that opens a rule block: `rule name:`, `rule:`, `checkpoint name:`, `use rule a as b
# with:` (also inside a loop, as report.smk's one rule per registered table).
BLOCK = re.compile(r"(rule\b[\w ]*|checkpoint \w+|use rule .*):\s*(#.*)?$")


def code_lines(text: str) -> list[str]:
    """The non-blank, non-comment lines of a Snakemake file outside its rule blocks: a block
    is its opening line and every following line indented deeper (or blank, or a comment)."""
    kept: list[str] = []
    block_indent: int | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if block_indent is not None and indent > block_indent:
            continue
        block_indent = None
        if BLOCK.fullmatch(stripped):
            block_indent = indent
            continue
        kept.append(line)
    return kept


def workflow_code_lines(repo: Path = REPO) -> dict[str, int]:
    """Code lines outside rule blocks per workflow file (the Snakefile, workflow/rules/*.smk)."""
    files = [repo / "Snakefile", *sorted((repo / "workflow" / "rules").glob("*.smk"))]
    return {str(f.relative_to(repo)): len(code_lines(f.read_text())) for f in files}


def test_code_lines_skip_rule_blocks_comments_and_blank_lines():
    text = '''# a comment
import os

X = 1  # counted


def helper(w):
    """counted: a helper outside any rule"""
    return w


rule a:
    input:
        lambda w: helper(w),
    output:
        "a",


for name in ("b", "c"):

    rule:
        name:
            name
        output:
            f"{name}.txt",


use rule a as d with:
    output:
        "d",


checkpoint e:
    output:
        "e",
onsuccess:
    print("done")
'''
    assert [line.strip() for line in code_lines(text)] == [
        "import os",
        "X = 1  # counted",
        "def helper(w):",
        '"""counted: a helper outside any rule"""',
        "return w",
        'for name in ("b", "c"):',
        "onsuccess:",
        'print("done")',
    ]


def test_the_workflow_files_hold_at_most_200_lines_of_code():
    counts = workflow_code_lines()
    assert sum(counts.values()) <= LIMIT, counts
