"""README.md's two commands are the ones .ci/run executes."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_ci_runs_exactly_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.+?)\n```", quick_start)
    assert len(commands) == 2
    ci_lines = [
        line
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd ", "rm "))
    ]
    assert ci_lines == commands


def _module_table() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("## The `ddae` package", 1)[1].split("\n## ", 1)[0]


def _package_layout() -> set[str]:
    """Every module and subpackage of ddae, as README names them (`x.py`, `pkg/`)."""
    package = REPO / "ddae"
    names = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    names |= {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    return names


def test_readme_module_table_matches_the_package_layout():
    rows = [line for line in _module_table().splitlines() if line.startswith("| `")]
    named = {
        name
        for row in rows
        for name in re.findall(r"`([\w/]+(?:\.py|/))`", row.split("|")[1])
        if "/" not in name.rstrip("/")  # `networks/dit.py` rows name files inside a package
    }
    layout = _package_layout()
    assert sorted(named - layout) == [], "README names modules that do not exist"
    assert sorted(layout - named) == [], "modules missing from README's module table"
