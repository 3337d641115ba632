"""Each table and figure depends on exactly what it shows: a dry run of one target on the paper
config plans only the datasets and runs that target shows (`snakemake -n results/table3.csv`
plans no Tiny-ImageNet job)."""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from ddae.report.registry import REPORTS

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
CIFAR, TINY = "cifar10", "tiny_imagenet"
FIGURES = PAPER_CONFIG["figures"]

# target -> (datasets it shows, runs it shows); from the paper's tables and figures.
EXPECTED = {
    "table2": ({CIFAR, TINY}, {"cifar10_edm", "tiny_imagenet_edm"}),
    "table3": ({CIFAR}, {"cifar10_edm", "cifar10_dit"}),
    "table4": ({TINY}, {"tiny_imagenet_edm", "tiny_imagenet_dit"}),
    "table5": (set(), set()),
    "table6": (set(), set()),
    "table7": (set(), set()),
    "table8": (set(), set()),
    "table9": (
        {CIFAR, TINY},
        {f"{d}_{m}" for d in (CIFAR, TINY) for m in ("ddpm", "edm", "dit")},
    ),
    "figure2": ({CIFAR}, set(FIGURES["figure2"].values())),
    "figure3": ({CIFAR}, set(FIGURES["figure3"].values())),
    "figure4": ({CIFAR}, set(FIGURES["figure4"].values())),
    # DDPM and EDM (the runs with a FID) on both datasets, beside the WideResNet baselines
    "figure5": ({CIFAR, TINY}, {f"{d}_{m}" for d in (CIFAR, TINY) for m in ("ddpm", "edm")}),
    "figure6": ({CIFAR}, {"cifar10_ddpm", "cifar10_edm"}),
}


def target(name: str) -> str:
    return f"results/{name}.{'png' if name.startswith('figure') else 'csv'}"


def dry_run(workdir: Path, name: str) -> str:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    command += ["-d", str(workdir), "-n", target(name)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def plans(tmp_path_factory) -> dict[str, str]:
    workdir = tmp_path_factory.mktemp("paper")
    (workdir / "config.yaml").write_text((REPO / "config.yaml").read_text())
    with ThreadPoolExecutor(max_workers=4) as pool:
        outputs = pool.map(lambda name: dry_run(workdir, name), EXPECTED)
    return dict(zip(EXPECTED, outputs, strict=True))


def planned(output: str) -> tuple[set[str], set[str]]:
    """(datasets, runs) that a dry run's jobs touch: wildcards and every results/ or
    resources/ path of its jobs."""
    jobs = output.split("\nrule ")[1:]
    text = "\n".join(jobs)
    runs = set(re.findall(r"\brun=([A-Za-z0-9_]+)", text))
    datasets = set(re.findall(r"\bdataset=([A-Za-z0-9_]+)", text))
    datasets |= set(re.findall(r"(?:results|resources/data|resources/downloads)/(\w+)/", text))
    datasets -= {"official", "inception", "stand_in", "baselines"}
    pretraining = PAPER_CONFIG["pretraining"]
    runs |= {run for run in re.findall(r"results/\w+/(\w+)/", text) if run in pretraining}
    return datasets, runs


def test_every_report_target_is_checked():
    assert set(REPORTS) - {"layer_choice"} == set(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_target_plans_only_what_it_shows(plans, name):
    datasets, runs = planned(plans[name])
    expected_datasets, expected_runs = EXPECTED[name]
    assert datasets == expected_datasets
    assert runs == expected_runs


def test_table3_plans_no_tiny_imagenet_job(plans):
    assert "tiny_imagenet" not in plans["table3"].lower()
    assert "tiny-imagenet-200.zip" not in plans["table3"]
    assert "table3" in plans["table3"]  # the target itself is planned
