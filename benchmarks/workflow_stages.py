"""Wall time and peak memory per pipeline stage, from Snakemake's per-job benchmark files.

Every rule writes ``logs/<...>.benchmark.tsv`` beside its log (Snakemake's ``benchmark:``): the
job's wall time ``s`` and peak resident memory ``max_rss`` (MB). This script groups them by stage
(the log name without its epoch / timestep wildcards) for one working directory:

    python benchmarks/workflow_stages.py tests/smoke        # after a smoke run

Jobs of one stage may run in parallel, so a stage's summed time can exceed the run's wall time.
Measurements, not tests: nothing is asserted.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd


def stage_of(path: Path) -> str:
    """``pretrain_epoch2.benchmark.tsv`` -> ``pretrain``; ``probe_timestep_epoch1_t101`` ->
    ``probe_timestep``."""
    name = path.name.removesuffix(".benchmark.tsv")
    return re.sub(r"(_epoch\d+)?(_t\d+)?$", "", name)


def stage_table(workdir: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((workdir / "logs").rglob("*.benchmark.tsv")):
        record = pd.read_csv(path, sep="\t").iloc[-1]
        rows.append({"stage": stage_of(path), "s": record["s"], "max_rss": record["max_rss"]})
    if not rows:
        raise SystemExit(f"{workdir}/logs: no *.benchmark.tsv files (run the workflow first)")
    jobs = pd.DataFrame(rows)
    table = jobs.groupby("stage").agg(
        jobs=("s", "size"),
        total_s=("s", "sum"),
        longest_s=("s", "max"),
        peak_rss_mb=("max_rss", "max"),
    )
    return table.sort_values("total_s", ascending=False).round(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, nargs="?", default=Path("tests/smoke"))
    args = parser.parse_args()
    table = stage_table(args.workdir)
    print(table.to_string())
    print(f"\n{int(table['jobs'].sum())} jobs, {table['total_s'].sum():.0f} s of job time")


if __name__ == "__main__":
    main()
