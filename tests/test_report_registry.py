"""The report registry (ddae.report.registry): every table and figure is one entry, the workflow
makes its rule, targets and inputs from it, and a new table touches three files outside tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ddae.report import registry
from ddae.report.registry import FIGURE, REPORTS, register, report_targets, write_report

REPO = Path(__file__).resolve().parents[1]


def write_toy(runs, csv, md):
    """A toy table: one row per run with the dataset it reads."""
    frame = pd.DataFrame({"run": list(runs), "dataset": list(runs.values())})
    frame.to_csv(csv, index=False)
    Path(md).write_text(f"{len(frame)} runs\n")


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(registry, "REPORTS", dict(REPORTS))  # registering here stays here
    return register("toy", write_toy)


def test_every_paper_table_and_figure_is_registered():
    tables = {f"table{n}" for n in range(2, 10)} | {"layer_choice"}
    assert set(REPORTS) == tables | {f"figure{n}" for n in range(2, 7)}
    assert {name for name, entry in REPORTS.items() if entry.kind == FIGURE} == {
        f"figure{n}" for n in range(2, 7)
    }
    targets = report_targets()
    assert "results/table5.md" in targets and "results/figure6.pdf" in targets
    assert len(targets) == 2 * len(REPORTS)
    for entry in REPORTS.values():
        assert callable(entry.function()), entry.name  # every "module:function" imports


def test_a_registered_table_is_planned_and_written(toy, tmp_path):
    assert registry.report_targets()[-2:] == ["results/toy.csv", "results/toy.md"]
    outputs = {"csv": tmp_path / "toy.csv", "md": tmp_path / "toy.md"}
    write_report("toy", {"runs": {"a": "digits", "b": "cifar10"}}, outputs)
    assert pd.read_csv(outputs["csv"]).to_dict("list") == {
        "run": ["a", "b"],
        "dataset": ["digits", "cifar10"],
    }
    assert (tmp_path / "toy.md").read_text() == "2 runs\n"


def test_registry_mistakes_are_named(toy, tmp_path):
    with pytest.raises(ValueError, match="registered twice"):
        register("toy", write_toy)
    with pytest.raises(ValueError, match="lower-case"):
        register("Toy table", write_toy)
    with pytest.raises(ValueError, match="not 'module:function'"):
        register("toy2", "ddae.report.toy.write_toy")
    with pytest.raises(ValueError, match="unknown table or figure 'tabel2'"):
        write_report("tabel2", {}, {})
    with pytest.raises(ValueError, match="expected"):
        write_report("toy", {"runs": {}}, {"png": tmp_path / "x.png"})


# What a new table adds, file by file (outside tests): its writer, its registry line and the
# params of its rule (the result files it reads). The caption (workflow/report/) is optional.
TOY_WRITER = '''"""A toy table: the final FID of every run that has one."""

import json

import pandas as pd


def write_fids(fids, csv, md):
    rows = [{"run": run, "fid": json.load(open(path))["fid"]} for run, path in fids.items()]
    pd.DataFrame(rows).to_csv(csv, index=False)
    open(md, "w").write(f"{len(rows)} FIDs\\n")
'''
TOY_REGISTRATION = '\nregister("toy", "ddae.report.toy:write_fids")\n'
TOY_PARAMS = """

@params_of("toy")
def toy_params(inputs, name):
    layout = inputs.layout
    runs = [run for run in layout.pretraining if "fid" in layout.evaluation(run)]
    return {"fids": {run: layout.stage_file(run, "fid") for run in runs}}
"""


def repository_copy(tree: Path) -> Path:
    """The workflow and package of this checkout, copied to ``tree`` (no run state)."""
    ignore = shutil.ignore_patterns("__pycache__", ".snakemake", "results", "resources", "logs")
    for name in ("ddae", "workflow", "profiles", "envs"):  # envs: the rules' conda files
        shutil.copytree(REPO / name, tree / name, ignore=ignore)
    for name in ("Snakefile", "config.yaml"):
        shutil.copy(REPO / name, tree / name)
    return tree


def changed_files(tree: Path) -> list[Path]:
    """The files of a `repository_copy` that differ from this checkout's, or are new."""
    return [
        path.relative_to(tree)
        for path in tree.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and (
            not (REPO / path.relative_to(tree)).is_file()
            or (REPO / path.relative_to(tree)).read_bytes() != path.read_bytes()
        )
    ]


def test_a_toy_table_touches_three_files_and_gets_its_rule(tmp_path):
    tree = repository_copy(tmp_path / "tree")
    (tree / "ddae/report/toy.py").write_text(TOY_WRITER)
    with open(tree / "ddae/report/registry.py", "a") as file:
        file.write(TOY_REGISTRATION)
    with open(tree / "ddae/pipeline/report_inputs.py", "a") as file:
        file.write(TOY_PARAMS)
    changed = changed_files(tree)
    assert len(changed) == 3, changed

    workdir = tmp_path / "work"
    workdir.mkdir()
    config = yaml.safe_load((REPO / "tests/smoke/config.yaml").read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "snakemake", "-s", str(tree / "Snakefile"), "-d", str(workdir)]
    env = {**os.environ, "PYTHONPATH": str(tree)}  # the tree's ddae, with the toy table

    def snakemake(*args):
        result = subprocess.run(
            [*command, *args], cwd=tree, env=env, capture_output=True, text=True, timeout=600
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    job = snakemake("-n", "results/toy.csv").split("\nrule toy:", 1)[1].split("\n\n", 1)[0]
    inputs = re.search(r"input: (.*)", job).group(1).split(", ")
    assert inputs and all(re.fullmatch(r"results/digits/\w+/fid/epoch\d+\.json", i) for i in inputs)
    assert "output: results/toy.csv, results/toy.md" in job
    assert re.search(r"^toy\s+1$", snakemake("-n"), flags=re.M)  # `rule all` asks for it too
