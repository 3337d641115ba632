"""The Snakemake workflow: lint, planning, config validation, the smoke run and reruns.

Every test runs Snakemake as a user would, in a temporary working directory holding its own
config.yaml, with the repository's Snakefile.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
PAPER_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SMOKE_CONFIG = yaml.safe_load((REPO / "tests" / "smoke" / "config.yaml").read_text())


def snakemake(workdir: Path, *args: str, check: bool = True) -> str:
    """Run snakemake from the repository root on `workdir`; returns stdout + stderr."""
    command = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{output[-5000:]}")
    return output if check else (result.returncode, output)


def workdir_with(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


def unshared(config: dict) -> dict:
    """A deep copy in which YAML aliases (*anchor) no longer share one mutable object."""
    return json.loads(json.dumps(config))


def planned_jobs(output: str) -> Counter:
    """(rule, run) counts of a dry run; run is None for jobs without a run wildcard."""
    jobs = Counter()
    for block in output.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0].strip()
        match = re.search(r"wildcards:.*?\brun=([A-Za-z0-9_]+)", block)
        jobs[rule, match.group(1) if match else None] += 1
    return jobs


def test_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_paper_config_plans_every_pretraining_job(tmp_path):
    output = snakemake(workdir_with(tmp_path, PAPER_CONFIG), "-n")
    jobs = planned_jobs(output)
    for run, spec in PAPER_CONFIG["pretraining"].items():
        assert jobs["pretrain", run] == len(spec["epochs"]), run
    assert sum(n for (rule, _), n in jobs.items() if rule == "pretrain") == 64
    assert jobs["prepare_dataset", None] == 2
    assert jobs["download_cifar10", None] == jobs["download_tiny_imagenet", None] == 1
    assert jobs["table5", None] == 1
    # the first epoch of a run starts from scratch, later ones from the previous checkpoint
    assert "results/cifar10/cifar10_ddpm/checkpoints/epoch150.pt" in output
    block = output[
        output.index("output: results/cifar10/cifar10_ddpm/checkpoints/epoch250.pt") - 400 :
    ]
    assert "results/cifar10/cifar10_ddpm/checkpoints/epoch150.pt" in block.split("output:")[0]


def test_table5_target_plans_only_table5(tmp_path):
    jobs = planned_jobs(snakemake(workdir_with(tmp_path, PAPER_CONFIG), "-n", "results/table5.csv"))
    assert jobs == Counter({("table5", None): 1})


def test_table5_of_the_paper_networks(tmp_path):
    workdir = workdir_with(tmp_path, PAPER_CONFIG)
    snakemake(workdir, "--cores", "1", "results/table5.csv")
    table = pd.read_csv(workdir / "results" / "table5.csv")
    exact = table[table["quantity"] == "parameters (exact)"].set_index("model")["measured"]
    assert exact.astype(int).to_dict() == {
        "CIFAR-10 DDPM": 35_746_307,
        "CIFAR-10 EDM": 55_733_891,
        "Tiny-ImageNet DDPM": 35_746_307,
        "Tiny-ImageNet EDM": 61_805_571,
    }
    compared = table[table["paper"].notna()]
    assert len(compared) == 4 * 7 and compared["matches"].all()
    markdown = (workdir / "results" / "table5.md").read_text()
    assert "| parameters (exact) | 35,746,307 | 55,733,891 | 35,746,307 | 61,805,571 |" in markdown
    assert "| pre-training epochs | 2000 | 4000 | 2000 | 2000 |" in markdown
    assert (workdir / "logs" / "table5.log").read_text().count("0 values differ from the paper")


def test_slurm_profile_plans(tmp_path):
    output = snakemake(
        workdir_with(tmp_path, PAPER_CONFIG), "-n", "--profile", str(REPO / "profiles" / "slurm")
    )
    jobs = planned_jobs(output)
    assert sum(n for (rule, _), n in jobs.items() if rule == "pretrain") == 64
    assert "gpu=4" in output and "gpu_slot=1" in output  # a 4-GPU job keeps its 4 GPUs


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["pretraining"]["cifar10_ddpm"]["training"].update(lrr=1e-4),
            r"'lrr' was unexpected.*On instance\['pretraining'\]\['cifar10_ddpm'\]\['training'\]",
        ),
        (
            lambda c: c["pretraining"]["cifar10_edm"]["network"].update(num_block=4),
            r"'num_block' was unexpected.*"
            r"On instance\['pretraining'\]\['cifar10_edm'\]\['network'\]",
        ),
        (lambda c: c.update(tabels={}), r"'tabels' was unexpected"),
        (
            lambda c: c["pretraining"]["cifar10_edm"]["network"].update(resolution=64),
            r"pretraining.cifar10_edm.network.resolution: 64 differs from datasets.cifar10",
        ),
        (
            lambda c: c["pretraining"]["cifar10_edm"].update(epochs=[500, 100]),
            r"pretraining.cifar10_edm.epochs: must increase strictly",
        ),
    ],
    ids=["training-key", "network-key", "top-level-key", "resolution", "epochs"],
)
def test_bad_config_stops_before_any_job(tmp_path, edit, message):
    config = unshared(PAPER_CONFIG)
    edit(config)
    code, output = snakemake(
        workdir_with(tmp_path, config), "--cores", "1", "results/table5.csv", check=False
    )
    assert code != 0
    assert re.search(message, output, re.DOTALL), output[-3000:]
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """A finished run of tests/smoke in a temporary copy."""
    workdir = tmp_path_factory.mktemp("smoke")
    shutil.copy(REPO / "tests" / "smoke" / "config.yaml", workdir / "config.yaml")
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.mark.slow
def test_smoke_run_produces_every_checkpoint(smoke_run):
    from ddae.checkpoints import load_checkpoint

    for run, spec in SMOKE_CONFIG["pretraining"].items():
        for epoch in spec["epochs"]:
            checkpoint = load_checkpoint(
                smoke_run / f"results/digits/{run}/checkpoints/epoch{epoch}.pt"
            )
            assert checkpoint["epoch"] == epoch
            assert checkpoint["step"] == epoch * (1437 // 64)
            assert (smoke_run / f"logs/digits/{run}/pretrain_epoch{epoch}.log").exists()
        metrics = (smoke_run / f"results/digits/{run}/metrics.jsonl").read_text().splitlines()
        assert len(metrics) >= 2
        assert not (smoke_run / f"results/digits/{run}/partial/partial.pt").exists()
    assert (smoke_run / "results/digits/train.npz").exists() is False  # data lives in resources/
    assert (smoke_run / "resources/data/digits/train.npz").exists()
    assert (
        "| parameters (exact) | 702,499 | 189,491 |"
        in (smoke_run / "results/table5.md").read_text()
    )
    assert "Nothing to be done" in snakemake(smoke_run, "-n")


def rerun_plan(workdir: Path, edit) -> Counter:
    """The jobs a dry run plans after editing the workdir's config (restored afterwards)."""
    original = (workdir / "config.yaml").read_text()
    config = unshared(yaml.safe_load(original))
    edit(config)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        return planned_jobs(snakemake(workdir, "-n"))
    finally:
        (workdir / "config.yaml").write_text(original)


@pytest.mark.slow
def test_changing_one_runs_lr_reruns_only_that_run(smoke_run):
    jobs = rerun_plan(
        smoke_run, lambda c: c["pretraining"]["digits_ddpm"]["training"].update(lr=5e-4)
    )
    assert jobs == Counter({("pretrain", "digits_ddpm"): 2, ("all", None): 1})


@pytest.mark.slow
@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c["pretraining"]["digits_ddpm"].update(minutes_per_epoch=9.0),
        lambda c: c["datasets"].update(cifar10={"resolution": 32}),
    ],
    ids=["walltime-estimate", "unused-dataset"],
)
def test_changing_unused_values_reruns_nothing(smoke_run, edit):
    assert rerun_plan(smoke_run, edit) == Counter()


@pytest.mark.slow
def test_changing_a_table_value_reruns_only_that_table(smoke_run):
    jobs = rerun_plan(smoke_run, lambda c: c["tables"]["table5"][0].update(label="tiny DDPM"))
    assert jobs == Counter({("table5", None): 1, ("all", None): 1})


@pytest.mark.slow
def test_longer_epoch_list_reuses_every_checkpoint(smoke_run):
    jobs = rerun_plan(
        smoke_run, lambda c: c["pretraining"]["digits_ddpm_t64"].update(epochs=[1, 2, 3])
    )
    assert jobs == Counter({("pretrain", "digits_ddpm_t64"): 1, ("all", None): 1})
