"""Wall and CPU time of ``snakemake -n``: is planning fast, with the checks it runs?

Since issue 23 (items 5-6) every config size is bounded before planning (`ddae.config_bounds`)
and every checkpoint a planned job reads is hashed once, then remembered by size and mtime in
``.snakemake/ddae/`` (`ddae.planning_checks`). Issue 21 asks that ``snakemake -n`` on
config.yaml take at most 2.5 s on 2 cores, importing no torch (tests/test_planning_imports.py).
This script times the dry runs that must stay fast, each in a fresh temporary working directory:

* ``snakemake alone``: a one-rule Snakefile, what Snakemake itself costs before any of ours;
* ``paper, parse only``: ``snakemake --list-rules`` on config.yaml: the Snakefile run (our
  imports, the config checks, the rules defined) without planning a job;
* ``paper``: the checkout's config.yaml with no results yet (nothing to verify);
* ``smoke``: its tests/smoke/config.yaml with no results yet;
* ``smoke+checkpoints cold`` / ``warm``: the same with every pretraining checkpoint of the smoke
  run on disk (synthetic payloads of ``--checkpoint-mb`` MB): the first plan hashes them, the
  second finds them in the cache.

Run it against two checkouts to compare before and after a change (the Snakefile's folder is
put first on PYTHONPATH, so each imports its own ``ddae``):

    python benchmarks/planning_time.py                            # this checkout
    python benchmarks/planning_time.py --snakefile /tmp/old/Snakefile

Prints the jobs planned and the best of ``--repeat`` runs, then the paper plan's best wall time
against issue 21's 2.5 s (information: on a shared machine wall time follows its load, which is
printed too; CPU seconds are the steadier figure) and its CPU split: Snakemake alone, parsing
the Snakefile, planning the 477 jobs (Snakemake's work per job and the rules' functions).
Python writes bytecode in the runs, as in a user's (``PYTHONDONTWRITEBYTECODE`` is dropped), so
that the best run imports cached modules. ``--no-checkpoints`` skips the checkpoint cases.
Measurements, not tests.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 2.5  # issue 21: snakemake -n on config.yaml on 2 cores
ONE_RULE = 'rule all:\n    output: "done"\n    shell: "touch {output}"\n'


def dry_run(snakefile: Path, workdir: Path, mode: str = "-n") -> tuple[int, float, float]:
    """(jobs planned, wall seconds, CPU seconds) of one ``snakemake -n`` (or another ``mode``)
    in ``workdir``."""
    env = {**os.environ, "PYTHONPATH": str(snakefile.parent)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # cached bytecode, as in a user's runs
    command = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), mode]
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
    import torch

    from ddae.checkpoints import save_checkpoint

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
    return f"{name:<40} {runs[0][0]:>5} {best_wall:>8.2f} {best_cpu:>8.2f}"


def best_of(
    repeat: int, setup: Callable[[Path], tuple[Any, ...]]
) -> list[tuple[int, float, float]]:
    """``repeat`` dry runs, each of the (Snakefile, workdir[, mode]) that ``setup`` makes in a
    fresh temporary folder."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as root:
            runs.append(dry_run(*setup(Path(root))))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snakefile", type=Path, default=REPO / "Snakefile")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs per case")
    parser.add_argument("--checkpoint-mb", type=int, default=20)
    parser.add_argument("--no-checkpoints", action="store_true", help="skip those two cases")
    args = parser.parse_args()
    snakefile = args.snakefile.resolve()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{snakefile}; best of {args.repeat}; {os.cpu_count()} CPUs, load average {load}")
    print(f"{'case':<40} {'jobs':>5} {'wall s':>8} {'CPU s':>8}")

    def one_rule(root: Path) -> tuple[Path, Path]:
        (root / "Snakefile").write_text(ONE_RULE)
        return root / "Snakefile", root

    alone = best_of(args.repeat, one_rule)
    print(row("snakemake alone (a one-rule Snakefile)", alone))
    checkout = snakefile.parent  # its own configs
    configs = {"paper": checkout / "config.yaml", "smoke": checkout / "tests/smoke/config.yaml"}
    parse = best_of(
        args.repeat,
        lambda root: (snakefile, workdir_with(configs["paper"], root, "paper"), "--list-rules"),
    )
    print(row("paper, parse only (--list-rules)", parse))
    plans = {}
    for name, config in configs.items():
        plans[name] = best_of(
            args.repeat, lambda root, c=config, n=name: (snakefile, workdir_with(c, root, n))
        )
        print(row(name, plans[name]))
    if not args.no_checkpoints:
        cold, warm = [], []
        for _ in range(args.repeat):
            with tempfile.TemporaryDirectory() as root:
                workdir = workdir_with(configs["smoke"], Path(root), "smoke")
                count = write_checkpoints(workdir, args.checkpoint_mb)
                cold.append(dry_run(snakefile, workdir))
                warm.append(dry_run(snakefile, workdir))
        print(row(f"smoke, {count} x {args.checkpoint_mb} MB checkpoints: cold", cold))
        print(row("  the same again: warm (cached)", warm))
    wall, cpu = (min(run[i] for run in plans["paper"]) for i in (1, 2))
    alone_wall, alone_cpu = (min(run[i] for run in alone) for i in (1, 2))
    parse_cpu = min(run[2] for run in parse)
    verdict = "met" if wall <= TARGET_S else "NOT met"
    print(
        f"paper: {wall:.2f} s wall, {cpu:.2f} CPU s; Snakemake alone {alone_wall:.2f} s wall, "
        f"{alone_cpu:.2f} CPU s, so the workflow adds {cpu - alone_cpu:.2f} CPU s: "
        f"{parse_cpu - alone_cpu:+.2f} parsing the Snakefile, {cpu - parse_cpu:+.2f} planning "
        f"{plans['paper'][0][0]} jobs. Issue 21's target, at most {TARGET_S} s wall on 2 cores: "
        f"{verdict}"
    )


if __name__ == "__main__":
    main()
