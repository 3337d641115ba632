"""The stage registry (ddae.pipeline.stages, issue 21): each stage is declared once and the
workflow derives its outputs, targets, params, config checks, schema, miniature and result
contracts from it; a new per-checkpoint stage touches three files outside tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from test_report_registry import changed_files, repository_copy

from ddae.paper_shape import miniature_config
from ddae.pipeline import stages
from ddae.pipeline.contracts import ResultContractError, locate
from ddae.pipeline.layout import Layout
from ddae.pipeline.stages import (
    ONE_EPOCH,
    STAGES,
    Miniature,
    ResultFile,
    Stage,
    register,
    stage_configs,
    stage_output,
    stages_with,
)
from ddae.probe_pairs import NAMED_PAIR_FOLDER
from ddae.settings.classifiers import ClassifierTrainingConfig
from ddae.settings.probes import GridSearchConfig

REPO = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = yaml.safe_load((REPO / "tests" / "smoke" / "config.yaml").read_text())


def test_the_registry_gives_the_stages_result_files_and_scopes():
    assert stages_with("checkpoint") == ("fid", "grid", "linear_probe", "align_uniform")
    assert stages_with("final") == ("finetune", "scratch", "noisy")
    expected = {  # the paths every earlier run wrote (README's results layout)
        "fid": "fid/epoch{epoch}.json",
        "grid": "grid/epoch{epoch}.csv",
        "linear_probe": "linear/epoch{epoch}.json",
        "align_uniform": "align_uniform/epoch{epoch}.csv",
        "finetune": "finetune/epoch{epoch}.json",
        "scratch": "scratch.json",
        "noisy": "noisy/epoch{epoch}.csv",
    }
    for stage, path in expected.items():
        assert stage_output(stage) == f"results/{{dataset}}/{{run}}/{path}", stage
    assert stage_output("grid", file="choice") == stage_output("grid", ".json")
    assert stage_output("linear_probe", ".metrics.jsonl", "named_pair") == (
        f"results/{{dataset}}/{{run}}/linear/{NAMED_PAIR_FOLDER}/epoch{{epoch}}.metrics.jsonl"
    )
    assert stage_configs()["grid"] is GridSearchConfig
    assert stage_configs()["scratch"] is stage_configs()["finetune"] is ClassifierTrainingConfig
    assert set(stage_configs()) == set(stages_with("checkpoint") + stages_with("final")) | {
        "features",
        "latents",
    }


def test_every_declared_result_file_is_located_with_its_contract():
    """The contracts locate a result path by the registry's declarations (one table)."""
    values = {"run": "r", "epoch": 3, "t": 5, "layer": 2, "perturbation": "vp"}
    for stage in STAGES.values():
        for file in stage.results.values():
            place = locate(file.path.format(dataset="digits", **values))
            assert place is not None and place.kind == file.contract, file
            assert place.writers == file.writers, file
            assert (place.checkpoint is not None) == file.of_checkpoint, file


def test_registry_mistakes_are_named(monkeypatch):
    monkeypatch.setattr(stages, "STAGES", dict(STAGES))
    with pytest.raises(ValueError, match="registered twice"):
        register(Stage("fid", "again"))
    with pytest.raises(ValueError, match="lower-case"):
        register(Stage("Toy stage", "a toy"))
    with pytest.raises(ValueError, match="per-checkpoint stage's 'module:function'"):
        register(Stage("toy", "a toy", scope="final", runner="ddae.toy:run"))
    toy = register(
        Stage(
            "toy",
            "a toy",
            scope="checkpoint",
            results={"result": ResultFile("{run}/toy/epoch{epoch}.json", "toy")},
            runner="ddae.toy:run",
        )
    )
    assert toy.param == "config" and toy.result.writers == ("ddae.toy:run",)
    assert stages.runner_stages() == [toy]


def test_the_miniature_shrinks_each_block_as_declared():
    assert Miniature({"samples": 64}).shrink({"samples": 50_000, "steps": 18}) == {
        "samples": 64,
        "steps": 18,
    }
    assert Miniature(caps={"views": 2}).shrink({"views": 5}) == {"views": 2}
    assert Miniature(caps={"views": 2}).shrink({"views": 1}) == {"views": 1}
    assert ONE_EPOCH.shrink({"epochs": 200, "warmup_epochs": 5, "lr": 0.1}) == {
        "epochs": 1,
        "warmup_epochs": 0,
        "lr": 0.1,
    }
    paper = yaml.safe_load((REPO / "config.yaml").read_text())
    mini = miniature_config(paper)["pretraining"]["cifar10_dit"]["evaluation"]
    assert mini["latents"]["image_size"] == 64 and mini["latents"]["views"] == 2
    assert mini["linear_probe"]["epochs"] == 1 and mini["features"]["views"] == 1


# --- planning reads result files through their contracts, with the run's bounds --------------


def smoke_layout() -> Layout:
    """The smoke config's layout, with Snakemake's `checkpoints` once grid_search has run."""
    choice = stage_output("grid", file="choice")
    output = lambda **wildcards: SimpleNamespace(json=choice.format(**wildcards))  # noqa: E731
    grid = SimpleNamespace(get=lambda **wildcards: SimpleNamespace(output=output(**wildcards)))
    return Layout(SMOKE_CONFIG, SimpleNamespace(grid_search=grid))


DDPM = SimpleNamespace(dataset="digits", run="digits_ddpm", epoch="2")
DDPM_DIR = "results/digits/digits_ddpm"


def grid_choice(layer: int) -> dict:
    return {
        "layer": layer,
        "t": 1,
        "steps": 1000,
        "test_accuracy": 50.0,
        "created_by": "ddae.probing.grid_search",
        "checkpoint": f"{DDPM_DIR}/checkpoints/epoch2.pt",
    }


def test_a_grid_choice_beyond_the_runs_layers_stops_planning(tmp_path, monkeypatch):
    """digits_ddpm has 4 decoder blocks: its choice of layer 5 passes a contract without the
    run's bounds, and stops the input function that reads it, naming file and key."""
    monkeypatch.chdir(tmp_path)
    path = Path(f"{DDPM_DIR}/grid/epoch2.json")
    path.parent.mkdir(parents=True)
    layout = smoke_layout()
    path.write_text(json.dumps(grid_choice(4)))
    assert layout.layer_t_choice(DDPM) == [str(path)]
    assert layout.layer_t_choice_final(DDPM) == [str(path)]
    path.write_text(json.dumps(grid_choice(5)))
    with pytest.raises(ResultContractError, match=rf"{path}: key 'layer' must lie in 1\.\.4"):
        layout.layer_t_choice(DDPM)


def test_a_nan_in_a_per_t_record_stops_the_grid_searchs_planning(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    layout = smoke_layout()
    files = layout.timestep_probe_files(DDPM)
    assert files == [f"{DDPM_DIR}/grid_timesteps/epoch2/t{t}.json" for t in (1, 101, 201, 301)]
    Path(files[1]).parent.mkdir(parents=True)
    Path(files[1]).write_text('{"t": 101, "steps": 1000, "rows": NaN}')
    with pytest.raises(ResultContractError, match=re.escape(files[1])):
        layout.timestep_probe_files(DDPM)


# --- a new stage: three files outside tests ----------------------------------------------------

TOY_MODULE = '''"""A toy stage: the mean pixel of the training split, scaled (range-checked)."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ToyConfig:
    scale: float = 1.0


def mean_pixel(config, *, checkpoint, sources, layer, t, steps, device):
    with np.load(sources["train"]) as data:
        score = float(data["images"].mean()) / 255 * config.scale
    return {"score": score, "layer": layer, "t": t}
'''
TOY_REGISTRATION = """
from ddae.toy_stage import ToyConfig  # noqa: E402

register(
    Stage(
        "toy",
        "the mean training pixel",
        ToyConfig,
        "checkpoint",
        {"result": ResultFile("{run}/toy/epoch{epoch}.json", "toy", of_checkpoint=True)},
        runner="ddae.toy_stage:mean_pixel",
    )
)
"""
TOY_CONTRACT = '    "toy": Contract("json", {"score": Field(NUMBER, 0, 1), **PROVENANCE}),\n'
TOY_RUN = {
    "dataset": "digits",
    "source": {"stand_in": "ddpm", "seed": 0},
    "epochs": [1],
    "gpus": 0,
    "minutes_per_epoch": 0.5,
    "network": SMOKE_CONFIG["pretraining"]["digits_ddpm"]["network"],
    "framework": {"kind": "ddpm", "timesteps": 1000},
    "evaluation": {"steps": 1000, "layer_t": {"layer": 2, "t": 11}, "toy": {"scale": 1.0}},
}
TOY_RESULT = "results/digits/toy_run/toy/epoch1.json"


def test_a_toy_stage_touches_three_files_and_gets_its_rule_checks_and_contract(tmp_path):
    tree = repository_copy(tmp_path / "tree")
    (tree / "ddae/toy_stage.py").write_text(TOY_MODULE)
    with open(tree / "ddae/pipeline/stages.py", "a") as file:
        file.write(TOY_REGISTRATION)
    kinds = tree / "ddae/pipeline/result_kinds.py"
    opening = "JSON_KINDS: dict[str, Contract] = {\n"
    kinds.write_text(kinds.read_text().replace(opening, opening + TOY_CONTRACT))
    changed = changed_files(tree)
    assert len(changed) == 3, changed

    workdir = tmp_path / "work"
    workdir.mkdir()
    config = {
        "datasets": {"digits": {"resolution": 16}},
        "pretraining": {"toy_run": TOY_RUN},
        "fid": {"extractor": "random_conv", "batch_size": 64},
    }
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "snakemake", "-s", str(tree / "Snakefile"), "-d", str(workdir)]
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1"}

    def run(*args, check=True, module=command, cwd=tree):
        result = subprocess.run(
            [*module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
        )
        output = result.stdout + result.stderr
        assert (result.returncode == 0) == check, output[-3000:]
        return output

    # planned by `rule all` (the registry's targets), its block validated by its class
    assert re.search(r"^toy\s+1$", run("-n", "--quiet", "rules"), flags=re.M)
    config["pretraining"]["toy_run"]["evaluation"]["toy"] = {"scal": 2.0}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert "unknown key 'scal' at pretraining.toy_run.evaluation.toy" in run("-n", check=False)
    # run: the runner's record, with its provenance, through the contract
    config["pretraining"]["toy_run"]["evaluation"]["toy"] = {"scale": 1.0}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run("--cores", "1", TOY_RESULT)
    record = json.loads((workdir / TOY_RESULT).read_text())
    with np.load(workdir / "resources/data/digits/train.npz") as data:
        assert record["score"] == pytest.approx(float(data["images"].mean()) / 255)
    assert record["layer"] == 2 and record["t"] == 11
    assert record["created_by"] == "ddae.toy_stage:mean_pixel"
    assert record["checkpoint"] == "results/digits/toy_run/checkpoints/epoch1.pt"
    # a value out of its range: the writer refuses it, naming the field
    config["pretraining"]["toy_run"]["evaluation"]["toy"] = {"scale": 1000.0}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert "key 'score' must lie in [0, 1]" in run("--cores", "1", TOY_RESULT, check=False)
    # ... and planning refuses an existing file that breaks it, naming file and field
    (workdir / TOY_RESULT).parent.mkdir(parents=True, exist_ok=True)  # the failed job's is gone
    (workdir / TOY_RESULT).write_text(json.dumps({**record, "score": 7.0}))
    check = f"from ddae.pipeline.layout import Layout; Layout({config}).verified({TOY_RESULT!r})"
    output = run("-c", check, check=False, module=[sys.executable], cwd=workdir)
    assert f"{TOY_RESULT}: key 'score' must lie in [0, 1]" in output
