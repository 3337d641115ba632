"""Planning imports no torch, diffusers or timm (issue 21): every Snakemake process, cluster jobs
included, parses the Snakefile and its rule files, so what they import is paid per job, and the
main process validates the whole config (`ddae.config_checks`) through the torch-free config
classes of `ddae.settings`.

The proof is exact: ``python -X importtime`` lists every module a process imports, the first
time it is imported, and Snakemake itself imports none of these packages. The `ddae` modules
planning imports must not bring numpy or pandas either (Snakemake's SLURM plugin imports
pandas at start-up, so that is checked by importing them alone in a fresh interpreter).
How long planning takes is measured by benchmarks/planning_time.py, not here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"paper": REPO / "config.yaml", "smoke": REPO / "tests" / "smoke" / "config.yaml"}
NOT_WHILE_PLANNING = ("torch", "diffusers", "timm")
NOT_IN_PLANNING_MODULES = (*NOT_WHILE_PLANNING, "numpy", "pandas")
_IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)


def imported_modules(importtime_log: str) -> list[str]:
    """The modules a ``python -X importtime`` run imported, in order, from its stderr."""
    return _IMPORT_LINE.findall(importtime_log)


def packages(modules: list[str], names: tuple[str, ...]) -> list[str]:
    """The entries of ``modules`` inside one of the top-level packages ``names``."""
    return [module for module in modules if module.split(".")[0] in names]


def planning_imports(config: Path, workdir: Path) -> list[str]:
    """Every module ``snakemake -n`` imports, planning ``config`` in the fresh ``workdir``."""
    workdir.mkdir()
    shutil.copy(config, workdir / "config.yaml")
    command = [sys.executable, "-X", "importtime", "-m", "snakemake"]
    command += ["-s", str(REPO / "Snakefile"), "-d", str(workdir), "-n"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"^total\s+\d+$", result.stdout, re.MULTILINE), "no jobs were planned"
    return imported_modules(result.stderr)


def test_imported_modules_reads_the_importtime_tree():
    log = (
        "import time: self [us] | cumulative | imported package\n"
        "import time:       120 |        120 |   _io\n"
        "import time:      1805 |    1653417 | ddae.config_checks\n"
        "import time:    149533 |    1564338 |     torch\n"
        "Building DAG of jobs...\n"
    )
    modules = imported_modules(log)
    assert modules == ["_io", "ddae.config_checks", "torch"]
    assert packages(modules, NOT_WHILE_PLANNING) == ["torch"]
    assert packages(["torchvision", "timm.layers"], NOT_WHILE_PLANNING) == ["timm.layers"]


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def planned(request, tmp_path_factory) -> list[str]:
    """The modules imported while planning one config (``paper``: config.yaml, ``smoke``)."""
    return planning_imports(CONFIGS[request.param], tmp_path_factory.mktemp("plan") / "work")


def test_planning_imports_no_torch_diffusers_or_timm(planned):
    assert "ddae.config_checks" in planned  # the main process checked the whole config
    assert packages(planned, NOT_WHILE_PLANNING) == []


def test_the_ddae_modules_planning_imports_bring_no_numpy_or_pandas(planned):
    ours = packages(planned, ("ddae",))
    assert "ddae.settings.networks" in ours and "ddae.validation" in ours
    probe = (
        "import importlib, sys\n"
        f"for name in {ours!r}:\n"
        "    importlib.import_module(name)\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert packages(result.stdout.split(), NOT_IN_PLANNING_MODULES) == []
