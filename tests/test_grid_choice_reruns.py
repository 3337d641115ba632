"""A grid search that runs again and picks the same (layer, t) reruns none of the jobs that read
its choice (issue 23, item 7: deleting ``grid/epoch2.csv`` reran 15 jobs, fine-tuning
included). grid_search is a Snakemake checkpoint (workflow/rules/evaluate.smk): once it has run,
Snakemake re-plans the jobs that read its choice JSON and compares the JSON's checksum with the
one it recorded when they last ran."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
from test_workflow import smoke_run, snakemake  # noqa: F401 (smoke_run: a fixture)

RUN = "results/digits/digits_ddpm"
# every job that reads epoch 2's choice (the run's grid at its final checkpoint)
READERS = (
    "linear/epoch2.json",
    "finetune/epoch2.json",
    "scratch.json",
    "noisy/epoch2.csv",
    "align_uniform/epoch1.csv",
    "align_uniform/epoch2.csv",
)
READER_RULES = {"linear_probe", "finetune", "scratch", "noisy_classifier", "align_uniform"}


def ran(output: str) -> Counter:
    """Jobs per rule that a (real) run executed."""
    return Counter(re.findall(r"^(?:local)?(?:rule|checkpoint) (\w+):$", output, re.MULTILINE))


@pytest.mark.slow
def test_a_grid_search_rerun_with_the_same_choice_reruns_none_of_its_readers(smoke_run):  # noqa: F811
    grid = smoke_run / RUN / "grid"
    choice = (grid / "epoch2.json").read_bytes()
    written = {name: (smoke_run / RUN / name).stat().st_mtime_ns for name in READERS}
    (grid / "epoch2.csv").unlink()
    jobs = ran(snakemake(smoke_run, "--cores", "2"))
    assert jobs["grid_search"] == 1, jobs
    assert not READER_RULES & set(jobs), jobs
    assert (grid / "epoch2.json").read_bytes() == choice and (grid / "epoch2.csv").is_file()
    assert {name: (smoke_run / RUN / name).stat().st_mtime_ns for name in READERS} == written
    # a grid that picks another pair: its readers run again, in the same invocation
    timestep = smoke_run / RUN / "grid_timesteps/epoch2/t101.json"
    record = json.loads(timestep.read_text())
    record["rows"][1]["test_accuracy"] = 100.0  # layer 2 at t = 101 now wins
    timestep.write_text(json.dumps(record))
    jobs = ran(snakemake(smoke_run, "--cores", "2", f"{RUN}/linear/epoch2.json"))
    assert jobs == Counter({"grid_search": 1, "linear_probe": 1}), jobs
    linear = json.loads((smoke_run / RUN / "linear/epoch2.json").read_text())
    assert (linear["layer"], linear["t"]) == (2, 101)
