"""Wall and CPU time of ``snakemake -n``: does verifying inputs while planning keep it fast?

Since issue 23 (items 5-6) every config size is bounded before planning (`ddae.config_bounds`)
and every checkpoint a planned job reads is hashed once, then remembered by size and mtime in
``.snakemake/ddae/`` (`ddae.planning_checks`). This script times the dry runs that must stay
fast, each in a fresh temporary working directory:

* ``paper``: the checkout's config.yaml with no results yet (nothing to verify);
* ``smoke``: its tests/smoke/config.yaml with no results yet;
* ``smoke+checkpoints cold`` / ``warm``: the same with every pretraining checkpoint of the smoke
  run on disk (synthetic payloads of ``--checkpoint-mb`` MB): the first plan hashes them, the
  second finds them in the cache.

Run it against two checkouts to compare before and after a change (the Snakefile's folder is
put first on PYTHONPATH, so each imports its own ``ddae``):

    python benchmarks/planning_time.py                            # this checkout
    python benchmarks/planning_time.py --snakefile /tmp/old/Snakefile

Prints the jobs planned and the best of ``--repeat`` runs. Measurements, not tests.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from ddae.checkpoints import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


def dry_run(snakefile: Path, workdir: Path) -> tuple[int, float, float]:
    """(jobs planned, wall seconds, CPU seconds) of one ``snakemake -n`` in ``workdir``."""
    env = {**os.environ, "PYTHONPATH": str(snakefile.parent)}
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), "-n"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=snakefile.parent, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    output = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f"snakemake -n failed in {workdir}:\n{output[-3000:]}")
    totals = re.findall(r"^total\s+(\d+)$", output, re.MULTILINE)
    return int(totals[-1]) if totals else 0, wall, cpu


def workdir_with(config: Path, root: Path, name: str) -> Path:
    workdir = root / name
    workdir.mkdir()
    shutil.copy(config, workdir / "config.yaml")
    return workdir


def write_checkpoints(workdir: Path, megabytes: int) -> int:
    """Every listed pretraining checkpoint of the workdir's config, as a synthetic payload
    (the digest covers every byte, so hashing cost follows the size)."""
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    weights = torch.zeros(megabytes * 2**18)  # float32: 4 bytes each
    count = 0
    for run, spec in config["pretraining"].items():
        for epoch in spec["epochs"]:
            path = workdir / "results" / spec["dataset"] / run / f"checkpoints/epoch{epoch}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_checkpoint({"run": {}, "ema": {"weights": weights}}, path)
            count += 1
    return count


def row(name: str, runs: list[tuple[int, float, float]]) -> str:
    best_wall, best_cpu = min(r[1] for r in runs), min(r[2] for r in runs)
    return f"{name:<40} {runs[0][0]:>5} {best_wall:>8.1f} {best_cpu:>8.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snakefile", type=Path, default=REPO / "Snakefile")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per case")
    parser.add_argument("--checkpoint-mb", type=int, default=20)
    args = parser.parse_args()
    snakefile = args.snakefile.resolve()
    print(f"{snakefile}; best of {args.repeat}; {os.cpu_count()} CPUs")
    print(f"{'case':<40} {'jobs':>5} {'wall s':>8} {'CPU s':>8}")
    checkout = snakefile.parent  # its own configs
    configs = {"paper": checkout / "config.yaml", "smoke": checkout / "tests/smoke/config.yaml"}
    for name, config in configs.items():
        runs = []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as root:
                runs.append(dry_run(snakefile, workdir_with(config, Path(root), name)))
        print(row(name, runs))
    cold, warm = [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as root:
            workdir = workdir_with(configs["smoke"], Path(root), "smoke")
            count = write_checkpoints(workdir, args.checkpoint_mb)
            cold.append(dry_run(snakefile, workdir))
            warm.append(dry_run(snakefile, workdir))
    print(row(f"smoke, {count} x {args.checkpoint_mb} MB checkpoints: cold", cold))
    print(row("  the same again: warm (cached)", warm))


if __name__ == "__main__":
    main()
