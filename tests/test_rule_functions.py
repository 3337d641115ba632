"""The functions the rules hand to Snakemake carry their parameters (ddae.pipeline.rule_functions,
issue 21: ``snakemake -n`` within 2.5 s), so Snakemake never inspects them per job, and they
carry exactly what `inspect.signature` would say; path-only values are wildcard patterns that
name the same folders as the run's own directory."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake.common import get_function_params

from ddae.pipeline import rule_functions
from ddae.pipeline.chain import PretrainingChain
from ddae.pipeline.layout import Layout

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = yaml.safe_load((REPO / "tests" / "smoke" / "config.yaml").read_text())
LAYOUT = Layout(SMOKE_CONFIG)


def wildcard_functions() -> dict[str, object]:
    """Every method of Layout and PretrainingChain that the rules may hold (first argument
    ``wildcards``), bound, and each params function of `Layout.stage_params`."""
    found = {}
    for owner in (LAYOUT, PretrainingChain(LAYOUT)):
        for name in dir(type(owner)):
            member = getattr(owner, name)
            if callable(member) and not name.startswith("_"):
                parameters = list(inspect.signature(member).parameters)
                if parameters[:1] == ["wildcards"]:
                    found[f"{type(owner).__name__}.{name}"] = member
    for keyword, function in LAYOUT.stage_params("features", "grid").items():
        found[f"stage_params {keyword}"] = function
    return found


FUNCTIONS = wildcard_functions()


def test_the_rules_hot_functions_are_all_found():
    assert {
        "Layout.checkpoint_input",
        "Layout.source_files",
        "Layout.evaluation_steps",
        "Layout.evaluation_gpu_slot",
        "Layout.timestep",
        "Layout.metrics_beside_csv",
        "PretrainingChain.start",
        "PretrainingChain.runtime",
        "stage_params features",
        "stage_params probe",
    } <= set(FUNCTIONS)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_snakemake_reads_the_parameters_without_inspecting(name, monkeypatch):
    function = FUNCTIONS[name]
    expected = dict(inspect.signature(function).parameters)

    def inspected(*args, **kwargs):
        raise AssertionError(f"Snakemake inspected {name} (it would, on every call per job)")

    monkeypatch.setattr(inspect, "signature", inspected)
    assert dict(get_function_params(function)) == expected


def test_a_marked_function_keeps_its_own_parameters():
    marked = rule_functions.known_parameters(lambda wildcards, output: output)
    assert list(get_function_params(marked)) == ["wildcards", "output"]
    assert marked(None, "o") == "o"


@pytest.mark.parametrize("run", sorted(SMOKE_CONFIG["pretraining"]))
def test_path_patterns_name_the_runs_own_folders(run):
    """The partial states and caches written as patterns of the job's wildcards are the folders
    under the run's directory (`Layout.run_directory`)."""
    dataset = SMOKE_CONFIG["pretraining"][run]["dataset"]
    wildcards = {"dataset": dataset, "run": run, "epoch": 3, "t": 7}
    directory = LAYOUT.run_directory(run)
    assert Layout.partial_state("noisy_epoch{epoch}").format(**wildcards) == (
        f"{directory}/partial/noisy_epoch3"
    )
    assert Layout.feature_cache_dir.format(**wildcards) == f"{directory}/features/epoch3/t7"
    assert PretrainingChain.state_dir.format(**wildcards) == f"{directory}/partial"
    assert PretrainingChain.metrics.format(**wildcards) == f"{directory}/metrics.jsonl"
    assert LAYOUT.timestep(SimpleNamespace(**wildcards)) == 7
