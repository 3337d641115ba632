"""The Snakemake workflow: lint, planning, config validation, the smoke run and reruns.

Every test runs Snakemake as a user would, in a temporary working directory holding its own
config.yaml, with the repository's Snakefile.
"""

from __future__ import annotations

import json
import os
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
    for block in re.split(r"\n(?:rule|checkpoint) ", output)[1:]:
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


@pytest.fixture(scope="module")
def paper_plan(tmp_path_factory) -> tuple[str, Counter]:
    """The dry run of the paper's config.yaml: (output, (rule, run) job counts)."""
    output = snakemake(workdir_with(tmp_path_factory.mktemp("paper"), PAPER_CONFIG), "-n")
    return output, planned_jobs(output)


def test_paper_config_plans_every_pretraining_job(paper_plan):
    output, jobs = paper_plan
    runs = PAPER_CONFIG["pretraining"]
    for run, spec in runs.items():
        if "source" in spec:
            assert jobs["pretrain", run] == 0 and jobs["import_official", run] == 1, run
        else:
            assert jobs["pretrain", run] == len(spec["epochs"]), run
    # 8 trained CIFAR-10 runs (6 x 6 Figure 4 checkpoints + 2 x 5 DDPM++) + 2 x 5 Tiny-ImageNet
    assert sum(n for (rule, _), n in jobs.items() if rule == "pretrain") == 56
    # Ho et al.'s DDPM and EDM's DDPM++ on CIFAR-10 and DiT-XL/2 twice come from their authors
    assert sum(n for (rule, _), n in jobs.items() if rule == "import_official") == 4
    assert jobs["download_official_file", None] == 2  # the EDM pickle, the DiT state dict
    assert jobs["download_official_folder", None] == 2  # diffusers folders: DDPM, SD VAE
    assert jobs["prepare_dataset", None] == 2
    assert jobs["download_dataset", None] == 2  # CIFAR-10 and Tiny-ImageNet archives
    assert jobs["table5", None] == 1
    # the first epoch of a run starts from scratch, later ones from the previous checkpoint
    assert "results/cifar10/cifar10_ddpm_t512/checkpoints/epoch150.pt" in output
    block = output[
        output.index("output: results/cifar10/cifar10_ddpm_t512/checkpoints/epoch250.pt") - 400 :
    ]
    assert "results/cifar10/cifar10_ddpm_t512/checkpoints/epoch150.pt" in block.split("output:")[0]


def test_paper_config_plans_every_evaluation(paper_plan):
    _, jobs = paper_plan
    runs = PAPER_CONFIG["pretraining"]

    def evaluated(run):
        spec = runs[run]["evaluation"]
        return len(runs[run]["epochs"]) if spec.get("checkpoints") == "all" else 1

    def grid_size(run):
        grid = runs[run]["evaluation"]["grid_t"]
        return len(range(grid["start"], grid["stop"] + 1, grid["every"]))

    for run, spec in runs.items():
        stages = spec["evaluation"]
        dit = spec["network"]["arch"] == "dit"
        assert jobs["sample_fid", run] == (evaluated(run) if "fid" in stages else 0), run
        assert jobs["linear_probe", run] == (evaluated(run) if "linear_probe" in stages else 0), run
        # one grid per run (Figure 4: the final checkpoint's serves every checkpoint)
        grids = 1 if stages.get("grid_checkpoints", "all") == "final" else evaluated(run)
        assert jobs["grid_search", run] == (grids if "grid" in stages else 0), run
        expected = grids * grid_size(run) if "grid" in stages else 0
        assert jobs["probe_timestep", run] == expected, run
        assert jobs["align_uniform", run] == (evaluated(run) if "align_uniform" in stages else 0)
        assert jobs["finetune", run] == ("finetune" in stages), run
        assert jobs["scratch", run] == ("scratch" in stages), run
        assert jobs["cache_latents", run] == dit, run
    # Table 9's timesteps are on the searched grids (DiT's 121 and 91 are 0-based: 122, 92)
    table9 = {
        "cifar10_ddpm": 11,
        "cifar10_edm": 4,
        "tiny_imagenet_ddpm": 45,
        "tiny_imagenet_edm": 14,
        "cifar10_dit": 122,
        "tiny_imagenet_dit": 92,
    }
    for run, t in table9.items():
        grid = runs[run]["evaluation"]["grid_t"]
        assert t in range(grid["start"], grid["stop"] + 1, grid["every"]), run
    assert jobs["fid_reference", None] == 2 and jobs["download_inception", None] == 1
    assert jobs["supervised_wrn", None] == 2 and jobs["noisy_wrn", None] == 2
    for name in ("table2", "table3", "table4", "table6", "table7", "table8", "table9"):
        assert jobs[name, None] == 1, name
    for n in range(2, 7):
        assert jobs[f"figure{n}", None] == 1


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
    assert sum(n for (rule, _), n in jobs.items() if rule == "pretrain") == 56
    assert "gpu=4" in output and "gpu_slot=1" in output  # a 4-GPU job keeps its 4 GPUs


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["pretraining"]["cifar10_ddpm"]["training"].update(lrr=1e-4),
            r"unknown key 'lrr' at pretraining.cifar10_ddpm.training.lrr \(line \d+\)",
        ),
        (
            lambda c: c["pretraining"]["cifar10_edm"]["network"].update(num_block=4),
            r"unknown key 'num_block' at pretraining.cifar10_edm.network.num_block.*"
            r"did you mean 'num_blocks'\?",
        ),
        (lambda c: c.update(tabels={}), r"unknown key 'tabels' at tabels.*did you mean 'tables'"),
        (
            lambda c: c["pretraining"]["cifar10_edm"]["network"].update(resolution=64),
            r"pretraining.cifar10_edm.network.resolution: 64 differs from datasets.cifar10",
        ),
        (
            lambda c: c["pretraining"]["cifar10_edm"].update(epochs=[500, 100]),
            r"pretraining.cifar10_edm.epochs: must increase strictly",
        ),
        (
            lambda c: c["pretraining"]["cifar10_edm"]["evaluation"]["linear_probe"].update(
                base_lr=1  # the key's name before the one learning-rate convention
            ),
            r"unknown key 'base_lr' at pretraining.cifar10_edm.evaluation.linear_probe.base_lr",
        ),
        (
            lambda c: c["pretraining"]["cifar10_ddpm_t64"]["evaluation"].update(steps=1000),
            r"pretraining.cifar10_ddpm_t64.evaluation.steps: DDPM timesteps count out of T = 64",
        ),
        (
            lambda c: c["pretraining"]["cifar10_edm"].update(epochs=[2000, 4000]),
            r"pretraining.cifar10_edm.epochs: a run with a source has one checkpoint",
        ),
        (
            lambda c: c["tables"]["models"].update(cifar10_edm="cifar10_emd"),
            r"tables.models.cifar10_edm: no pretraining entry 'cifar10_emd'",
        ),
        (
            lambda c: c["fid"].update(extractor="inceptionv3"),
            r"fid.extractor: 'inceptionv3' is not one of the allowed values.*"
            r"did you mean 'inception'",
        ),
    ],
    ids=[
        "training-key",
        "network-key",
        "top-level-key",
        "resolution",
        "epochs",
        "probe-key",
        "ddpm-steps",
        "official-epochs",
        "table-model",
        "fid-extractor",
    ],
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


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c["pretraining"]["digits_ddpmpp_edm_init"].update(epochs=[1]),
            r"findings.models\[0\].random_init.*needs epochs: \[0\]",
        ),
        (
            lambda c: c["pretraining"]["digits_ddpmpp_edm_init"]["training"].update(seed=7),
            r"findings.models\[0\]: runs 'digits_ddpmpp_edm' and 'digits_ddpmpp_edm_init' "
            r"differ in training",
        ),
        (
            lambda c: [
                c["pretraining"][run]["training"].update(lr=5.0e-3)
                for run in ("digits_ddpmpp_edm_seed1", "digits_ddpmpp_edm_init_seed1")
            ],
            r"findings.models\[0\].replicates\[0\].pretrained: run 'digits_ddpmpp_edm_seed1' "
            r"differs from 'digits_ddpmpp_edm' in training beyond its seed values",
        ),
    ],
    ids=["trained-reference", "other-initialisation", "replicate-of-another-recipe"],
)
def test_findings_reference_must_be_the_untrained_twin(tmp_path, edit, message):
    config = unshared(SMOKE_CONFIG)
    edit(config)
    code, output = snakemake(workdir_with(tmp_path, config), "-n", check=False)
    assert code != 0 and re.search(message, output, re.DOTALL), output[-3000:]


SMOKE_DIR = REPO / "tests" / "smoke"
SMOKE_STATE = ("results", "resources", "logs", ".snakemake")  # what a finished run leaves
CODE = (REPO / "Snakefile", REPO / "ddae", REPO / "workflow", SMOKE_DIR / "config.yaml")


def newest_mtime(paths) -> float:
    files = [p for path in paths for p in ([path] if path.is_file() else path.rglob("*"))]
    return max(f.stat().st_mtime for f in files if f.is_file())


def reusable_smoke_run() -> bool:
    """Whether tests/smoke holds a finished main-job run (README's first command) that is newer
    than every file of the code and config that made it: then the tests start from a copy of it
    instead of training everything again (CI runs the main job just before the tests)."""
    summary = SMOKE_DIR / "results" / "findings.json"
    if not all((SMOKE_DIR / name).is_dir() for name in SMOKE_STATE) or not summary.is_file():
        return False
    if (SMOKE_DIR / ".snakemake" / "incomplete").is_dir() and any(
        (SMOKE_DIR / ".snakemake" / "incomplete").iterdir()
    ):
        return False
    return summary.stat().st_mtime > newest_mtime(CODE)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    """A finished run of tests/smoke in a temporary copy: a copy of the main job's finished run
    when it is newer than the code (`reusable_smoke_run`), else a fresh one. Snakemake then
    brings the copy up to date, so a stale copy reruns what changed."""
    workdir = tmp_path_factory.mktemp("smoke")
    shutil.copy(SMOKE_DIR / "config.yaml", workdir / "config.yaml")
    if reusable_smoke_run():
        for name in SMOKE_STATE:  # copy2 keeps modification times, which Snakemake compares
            shutil.copytree(SMOKE_DIR / name, workdir / name, symlinks=True)
        shutil.rmtree(workdir / ".snakemake" / "locks", ignore_errors=True)
    snakemake(workdir, "--cores", "2")
    return workdir


@pytest.mark.slow
def test_smoke_run_produces_every_checkpoint(smoke_run):
    import torch

    from ddae.checkpoints import load_checkpoint

    for run, spec in SMOKE_CONFIG["pretraining"].items():
        if "source" in spec:
            continue
        for epoch in spec["epochs"]:
            checkpoint = load_checkpoint(
                smoke_run / f"results/digits/{run}/checkpoints/epoch{epoch}.pt"
            )
            assert checkpoint["epoch"] == epoch
            assert checkpoint["step"] == epoch * -(-1437 // 64)  # 23: the last batch kept
            assert (smoke_run / f"logs/digits/{run}/pretrain_epoch{epoch}.log").exists()
            if epoch == 0:  # written without training: the initial weights, EMA = model
                for name, value in checkpoint["ema"].items():
                    assert torch.equal(value, checkpoint["model"][name]), name
        if spec["epochs"] == [0]:
            continue
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


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 1000


@pytest.mark.slow
def test_smoke_run_produces_every_evaluation_table_and_figure(smoke_run):
    results = smoke_run / "results"
    for run, spec in SMOKE_CONFIG["pretraining"].items():
        stages = spec.get("evaluation", {})
        epochs = spec["epochs"] if stages.get("checkpoints") == "all" else spec["epochs"][-1:]
        directory = results / spec["dataset"] / run
        for epoch in epochs:
            if "fid" in stages:
                fid = json.loads((directory / f"fid/epoch{epoch}.json").read_text())
                assert fid["extractor"] == "random_conv" and fid["samples"] == 256
                assert fid["fid"] > 0 and is_png(directory / f"fid/epoch{epoch}.png")
            if "grid" in stages:
                grid = pd.read_csv(directory / f"grid/epoch{epoch}.csv")
                grid_t = stages["grid_t"]
                ts = range(grid_t["start"], grid_t["stop"] + 1, grid_t["every"])
                assert sorted(set(grid["t"])) == list(ts)
                assert grid["test_accuracy"].between(0, 100).all()
                best = json.loads((directory / f"grid/epoch{epoch}.json").read_text())
                assert best["test_accuracy"] == grid["test_accuracy"].max()
                assert not (directory / f"features/epoch{epoch}").exists() or not any(
                    (directory / f"features/epoch{epoch}").iterdir()
                ), "feature caches are temporary"
            if "linear_probe" in stages:
                linear = json.loads((directory / f"linear/epoch{epoch}.json").read_text())
                # Adam logs each epoch; L-BFGS fits the epochs' views at once, one entry
                lbfgs = stages["linear_probe"].get("solver") == "lbfgs"
                assert len(linear["history"]) == (1 if lbfgs else stages["linear_probe"]["epochs"])
                assert linear["checkpoint"].endswith(f"{run}/checkpoints/epoch{epoch}.pt")
                if stages.get("layer_t", "grid") != "grid":
                    assert linear["layer"] == stages["layer_t"]["layer"]
                    assert linear["t"] == stages["layer_t"]["t"]
            if "align_uniform" in stages:
                table = pd.read_csv(directory / f"align_uniform/epoch{epoch}.csv")
                assert (table["alignment"] >= 0).all() and (table["uniformity"] <= 0).all()
        final = spec["epochs"][-1]
        if "finetune" in stages:
            finetune = json.loads((directory / f"finetune/epoch{final}.json").read_text())
            assert len(finetune["history"]) == stages["finetune"]["epochs"]
        if "scratch" in stages:
            assert json.loads((directory / "scratch.json").read_text())["checkpoint"] is None
        if "noisy" in stages:
            noisy = pd.read_csv(directory / f"noisy/epoch{final}.csv")
            assert list(noisy.columns) == ["t", "steps", "sigma", "test_accuracy"]
    baselines = results / "digits" / "baselines"
    assert 10 < json.loads((baselines / "wrn.json").read_text())["test_accuracy"] <= 100
    for perturbation in ("vp", "ve"):
        assert len(pd.read_csv(baselines / f"noisy_wrn_{perturbation}.csv")) > 1
    for name in ("table2", "table3", "table4", "table6", "table7", "table8", "table9"):
        assert len(pd.read_csv(results / f"{name}.csv")) > 0, name
        assert (results / f"{name}.md").read_text().startswith(f"Table {name[5:]}"), name
    for name in ("table2", "table3"):  # digits numbers never sit in a CIFAR-10 row
        table = pd.read_csv(results / f"{name}.csv")
        cifar = table[table["section"].str.startswith("CIFAR-10")]  # with ImageNet transfer too
        assert cifar["measured"].isna().all() and cifar["difference"].isna().all(), name
        assert (cifar["status"] == "other dataset").sum() >= 2, name
    for n in range(2, 7):
        assert is_png(results / f"figure{n}.png"), n
        assert (results / f"figure{n}.pdf").read_bytes().startswith(b"%PDF"), n
    assert (results / "layer_choice.md").exists()
    # finished jobs leave no lock file or emptied folder in results/ (issue 22 item 9)
    leftovers = [
        path
        for path in results.rglob("*")
        if path.name == "writer.lock" or (path.is_dir() and not any(path.iterdir()))
    ]
    assert not leftovers, leftovers


def pdf_text(path: Path) -> str:
    """The text a matplotlib PDF draws (its Flate streams' Tj strings and kerned TJ arrays;
    with TrueType fonts, pdf.fonttype 42, each character is two bytes, the first zero here)."""
    import zlib

    lines = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", path.read_bytes(), re.S):
        try:
            content = zlib.decompress(stream)
        except zlib.error:  # images, fonts
            continue
        string = rb"\(((?:[^()\\]|\\.)*)\)"
        for kerned in re.findall(rb"\[(.*?)\]\s*TJ", content, re.S):
            lines.append(b"".join(re.findall(string, kerned)))
        lines += re.findall(string + rb"\s*Tj", content)
    return "\n".join(line.decode("latin-1").replace("\\", "").replace("\0", "") for line in lines)


@pytest.mark.slow
def test_smoke_labels_name_the_runs_and_networks_that_made_them(smoke_run):
    """Issue 22 item 5: a digits run is never labelled as the paper's CIFAR-10 model it stands
    for, nor the tiny WideResNet as WRN-28-10, in a figure (its PDF text) or in the row labels of
    Tables 6-9; and Figure 5 draws no paper value on its digits axis."""
    results = smoke_run / "results"
    for n in range(2, 7):
        text = pdf_text(results / f"figure{n}.pdf")
        assert "digits" in text, n  # the extraction works: every figure names its dataset
        for wrong in ("cifar10_", "CIFAR-10", "28-10"):
            assert wrong not in text, (n, wrong)
    figure5, figure6 = pdf_text(results / "figure5.pdf"), pdf_text(results / "figure6.pdf")
    assert "WRN-10-1 (ours)" in figure5 and "(paper)" not in figure5
    assert "digits_ddpmpp_edm" in figure5 and "noise-conditional WRN-10-1" in figure6
    for name in ("table6", "table7", "table8", "table9"):
        labels = set(pd.read_csv(results / f"{name}.csv")["model"])
        assert not any("cifar10" in label or "28-10" in label for label in labels), labels
    assert "digits WRN-10-1" in set(pd.read_csv(results / "table8.csv")["model"])


@pytest.mark.slow
def test_a_damaged_result_stops_the_run_and_keeps_the_tables(smoke_run):
    """Issue 15: `garbage{` in a result file stops Snakemake while it plans, naming the file,
    and the tables that read it survive (Snakemake deletes a job's outputs before it runs)."""
    damaged = smoke_run / "results/digits/digits_ddpmpp_edm/linear/epoch4.json"
    table = smoke_run / "results/table3.md"
    original, before, stat = damaged.read_bytes(), table.read_bytes(), damaged.stat()
    damaged.write_text("garbage{")
    try:
        code, output = snakemake(smoke_run, "--cores", "1", "results/table3.csv", check=False)
    finally:  # as it was, modification time included: the rerun tests below compare times
        damaged.write_bytes(original)
        os.utime(damaged, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert code != 0
    assert "linear/epoch4.json: not valid JSON" in output, output[-3000:]
    assert table.read_bytes() == before


@pytest.mark.slow
def test_smoke_job_logs_are_not_empty_and_end_with_their_result(smoke_run):
    result = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO ddae\.(?!progress)[\w.]+: \S")
    logs = sorted((smoke_run / "logs").rglob("*.log"))
    assert len(logs) > 50
    for log in logs:
        lines = [line.strip() for line in re.split(r"[\r\n]", log.read_text()) if line.strip()]
        assert lines, f"{log} is empty"
        assert result.match(lines[-1]), f"{log} ends with {lines[-1]!r}"


@pytest.mark.slow
def test_smoke_run_shows_the_papers_findings(smoke_run, tmp_path):
    """The miniature's findings hold on its own results, and a broken extractor's grid fed
    through the same check fails them (ddae.findings)."""
    from ddae.findings import Thresholds, model_findings

    record = json.loads((smoke_run / "results/findings.json").read_text())
    model = record["models"][0]
    failed = [check for check in model["checks"] if not check["passed"]]
    assert record["passed"] and not failed, failed
    assert {check["finding"] for check in model["checks"]} >= {
        "pretraining_beats_random_init",
        "above_chance",
        "grid_not_flat",
        "noise_level_matters",
        "best_t_not_noisiest",
        "finetune_at_least_linear",
    }
    # issue 22: over the EDM run's three seeds, and the scale line computed from the run
    assert model["seeds"] == 3 and all(len(check["values"]) == 3 for check in model["checks"])
    assert "1,437 train / 360 test images, 16x16 px" in record["scale"]
    assert "3 seeds of pre-training and grid" in record["scale"]
    points = model["reference_points"]
    for name in ("linear probe on raw pixels", "supervised, from scratch", "DDAE fine-tuned"):
        assert 0 < points[name] <= 100, name
    assert "Figure 4" in (smoke_run / "results/findings.md").read_text()
    files = {key: smoke_run / path for key, path in model["files"].items()}
    thresholds = Thresholds(**record["thresholds"])

    def failures(files):
        checked = model_findings({"label": "broken", **files}, thresholds)["checks"]
        return {check["finding"] for check in checked if not check["passed"]}

    # untrained weights: the random-init network's own grid in place of the pretrained one
    assert "pretraining_beats_random_init" in failures({**files, "grid": files["random_init_grid"]})
    # noise not applied: every t sees the features of the least noisy one
    grid = pd.read_csv(files["grid"])
    lowest = grid[grid["t"] == grid["t"].min()].set_index("layer")["test_accuracy"]
    grid["test_accuracy"] = grid["layer"].map(lowest)
    grid.to_csv(tmp_path / "noiseless.csv", index=False)
    assert "noise_level_matters" in failures({**files, "grid": tmp_path / "noiseless.csv"})


@pytest.mark.slow
def test_run_summary_points_a_miniature_at_its_findings_first(smoke_run):
    """The onsuccess summary is given the findings as well as the tables (Snakefile), so a
    miniature's summary starts with results/findings.md; a leaf rerun triggers it."""
    (smoke_run / "results/findings.md").unlink()
    output = snakemake(smoke_run, "--cores", "1", "results/findings.md")
    start = [line for line in output.splitlines() if "start with:" in line]
    assert start and start[-1].endswith("results/findings.md"), start


@pytest.mark.slow
def test_smoke_report_has_every_table_and_figure(smoke_run):
    report = smoke_run / "report.html"
    snakemake(smoke_run, "--report", str(report))
    html = report.read_text(errors="replace")
    for n in range(2, 7):
        assert f"figure{n}.png" in html, n
    for name in ("table2", "table3", "table4", "table6", "table7", "table8", "table9"):
        assert f"{name}.csv" in html, name


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
    run = "digits_ddpm"  # both checkpoints, every evaluation stage of the run and what reads them
    expected = {("pretrain", run): 2, ("sample_fid", run): 2, ("probe_timestep", run): 2 * 4}
    expected |= {(rule, run): 2 for rule in ("grid_search", "linear_probe", "align_uniform")}
    expected |= {(rule, run): 1 for rule in ("finetune", "scratch", "noisy_classifier")}
    # Tables 2-4 show no DDPM row (their rows: EDM, DiT, WRN), so they do not read this run
    readers = ["table9", "layer_choice", "all"]
    expected |= {(name, None): 1 for name in readers + [f"figure{n}" for n in range(2, 7)]}
    assert jobs == Counter(expected)


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
def test_changing_a_probe_setting_reruns_only_that_probe_and_what_reads_it(smoke_run):
    jobs = rerun_plan(
        smoke_run,
        lambda c: c["pretraining"]["digits_ddpm_t64"]["evaluation"]["linear_probe"].update(
            epochs=4
        ),
    )
    # both checkpoints (Figure 4 plots them); Table 6 lists only the paper models' settings
    assert jobs == Counter(
        {("linear_probe", "digits_ddpm_t64"): 2, ("figure4", None): 1, ("all", None): 1}
    )


@pytest.mark.slow
def test_changing_a_table_value_reruns_only_that_table(smoke_run):
    jobs = rerun_plan(smoke_run, lambda c: c["tables"]["table5"][0].update(label="tiny DDPM"))
    assert jobs == Counter({("table5", None): 1, ("all", None): 1})


@pytest.mark.slow
def test_longer_epoch_list_reuses_every_checkpoint(smoke_run):
    jobs = rerun_plan(
        smoke_run, lambda c: c["pretraining"]["digits_ddpm_t64"].update(epochs=[1, 2, 3])
    )
    run = "digits_ddpm_t64"  # one more checkpoint, evaluated, and Figure 4 redrawn with it
    assert jobs == Counter(
        {
            ("pretrain", run): 1,
            ("sample_fid", run): 1,
            ("linear_probe", run): 1,
            ("figure4", None): 1,
            ("all", None): 1,
        }
    )
