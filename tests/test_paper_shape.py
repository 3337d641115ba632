"""Paper-shape fidelity (issue 11): the settings of the paper-scale config.yaml, checked without
compute — DiT's layer numbering against Tables 3-4's encoder sizes, Table 9's comparison, and
Figure 4's probe protocol in the planned DAG."""

from __future__ import annotations

import copy
import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from ddae.alignment import AlignUniformConfig as AlignUniform
from ddae.configs import ConfigError, from_mapping
from ddae.datasets.format import ImageDataset
from ddae.diffusion import build_framework
from ddae.features import DecoderFeatures, FeatureCacheConfig
from ddae.fid import SamplingConfig
from ddae.finetune import ClassifierTrainingConfig
from ddae.latents import LatentCacheConfig
from ddae.networks import NETWORKS, build_network
from ddae.networks.dit import DiT, DiTEncoder
from ddae.paper_shape import (
    _DECODER_DEFAULTS,
    check_paper_shape,
    decoder_layer_count,
    miniature_config,
    write_miniature,
)
from ddae.pipeline.layout import Layout
from ddae.pipeline.stages import stage_output, stages_with
from ddae.report.table9 import table9
from ddae.sampling import ddim_table_of, sampling_schedule
from ddae.settings.noisy_heads import NoisyHeadConfig
from ddae.settings.pretraining import TrainingConfig, normalize_run
from ddae.settings.probes import GridSearchConfig, LinearProbeConfig


def test_dit_truncated_encoder_sizes_pin_the_papers_layer_numbering():
    """Table 3's DiT encoder is 314M and Table 4's 338M: 13 and 14 blocks of 23,905,152 plus the
    3,091,968 embedding parameters. So the paper's 0-based "12/28" is 13 blocks deep (layer 13
    here, blocks.12) and "13/28" is 14 (layer 14, blocks.13); 12 blocks would be 290M."""
    with torch.device("meta"):
        dit = DiT(DiT.Config())
    block = sum(p.numel() for p in dit.blocks[0].parameters())
    embeddings = sum(
        p.numel() for n, p in dit.named_parameters() if not n.startswith(("blocks", "final_layer"))
    )
    assert (block, embeddings) == (23_905_152, 3_091_968)

    def size(layer: int) -> int:
        return sum(p.numel() for p in DiTEncoder(dit, layer).parameters())

    assert size(13) == 3_091_968 + 13 * 23_905_152 == 313_858_944  # Table 3: 314M
    assert size(14) == 3_091_968 + 14 * 23_905_152 == 337_764_096  # Table 4: 338M
    assert size(12) == 289_953_792  # what reading "12/28" as 12 blocks would give
    assert DiTEncoder(dit, 13).layer_name == dit.decoder_blocks()[12][0] == "blocks.12"


def _grid(tmp_path, layer: int, t: int) -> str:
    rows = [
        {
            "layer": k,
            "layer_name": f"blocks.{k - 1}",
            "t": tt,
            "steps": 1000,
            "sigma": tt / 1000,  # rises with t, as a noise schedule
            "test_accuracy": 90.0 if (k, tt) == (layer, t) else 10.0,
        }
        for k in range(1, 29)
        for tt in (92, 122)
    ]
    path = tmp_path / f"grid_{layer}_{t}.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    best = max(rows, key=lambda row: row["test_accuracy"])  # the grid search's choice file
    best |= {"created_by": "x", "checkpoint": None}
    path.with_suffix(".json").write_text(json.dumps(best))
    return str(path)


@pytest.mark.parametrize(
    ("layer", "t", "matches"), [(13, 122, True), (12, 92, False), (13, 92, False)]
)
def test_table9_reads_the_papers_dit_numbers_as_zero_based(tmp_path, layer, t, matches):
    """Table 9's DiT "12/28, t = 121" is blocks.12 and ᾱ index 121: layer 13, t = 122 here."""
    grid = _grid(tmp_path, layer, t)
    column = {"label": "CIFAR-10 DiT", "grid": grid, "choice": grid.replace(".csv", ".json")}
    frame = table9([{**column, "paper": "cifar10_dit"}])
    got = dict(zip(frame["quantity"], frame["matches"], strict=True))
    assert got["layer"] is (layer == 13)
    assert got["timestep"] is (t == 122)
    assert (got["layer"] and got["timestep"]) is matches
    assert "blocks.12 = 13/28 here" in frame.loc[frame["quantity"] == "layer", "paper"].iloc[0]
    assert "122/1000 here" in frame.loc[frame["quantity"] == "timestep", "paper"].iloc[0]


# --- the guard: every job of the paper-scale config.yaml, built without compute ----------------

REPO = Path(__file__).resolve().parents[1]
PAPER_CONFIG = yaml.safe_load((REPO / "config.yaml").read_text())
SMOKE_CONFIG = yaml.safe_load((REPO / "tests" / "smoke" / "config.yaml").read_text())
# Paper Sec. 4: CIFAR-10 50,000 / 10,000 and Tiny-ImageNet 100,000 / 10,000 images (train/test).
DATASET_SIZES = {"cifar10": (50_000, 10_000), "tiny_imagenet": (100_000, 10_000)}
FEATURE_CACHE_BUDGET = 13 * 2**30  # one t directory (temp) of the grid search, fp16
CHECKPOINT_STAGES = stages_with("checkpoint")  # fid, grid, linear_probe, align_uniform
FINAL_STAGES = stages_with("final")  # finetune, scratch, noisy


def workflow_helpers(config: dict) -> Layout:
    """The rules' layout (`ddae.pipeline.layout`) bound to `config`: the same methods the rules
    call for their targets, wildcards and params, with Snakemake's `checkpoints` once the
    grid_search checkpoint has run (its output's path)."""
    choice = stage_output("grid", file="choice")
    output = lambda **wildcards: SimpleNamespace(json=choice.format(**wildcards))  # noqa: E731
    grid = SimpleNamespace(get=lambda **wildcards: SimpleNamespace(output=output(**wildcards)))
    return Layout(copy.deepcopy(config), SimpleNamespace(grid_search=grid))


def meta_network(spec: dict):
    """The run's network on the meta device and its decoder feature widths (a meta forward)."""
    with torch.device("meta"):
        net = build_network(spec)
        side = net.config.input_size if spec["arch"] == "dit" else net.config.resolution
        shape = (2, net.config.in_channels, side, side)
        augment = getattr(net.config, "augment_dim", 0)
        with DecoderFeatures(net, stop_early=False) as features:
            pooled = features(
                torch.empty(shape), torch.zeros(2), torch.zeros(2, augment) if augment else None
            )
    return net, [p.shape[1] for p in pooled]


def check_pair(net, framework, layer: int, t: int, steps: int, where: str) -> float:
    """A (layer, t) pair as the scripts resolve it: a decoder block and a finite σ."""
    assert 1 <= layer <= len(net.decoder_blocks()), f"{where}: layer {layer}"
    sigma = framework.sigma_at_timestep(t, steps)
    assert math.isfinite(sigma) and sigma > 0, f"{where}: t {t} gives σ {sigma}"
    return sigma


def walk_paper_jobs(config: dict) -> dict[str, int]:
    """Build every job's settings as its script would; returns job counts by kind."""
    dag = workflow_helpers(config)
    counts: Counter = Counter()
    walked = set()
    for name, run in dag.pretraining.items():
        dataset = run["dataset"]
        train_size, test_size = DATASET_SIZES[dataset]
        net, widths = meta_network(run["network"])
        assert decoder_layer_count(run["network"]) == len(net.decoder_blocks()) == len(widths)
        framework = build_framework(run["framework"], f"pretraining.{name}.framework")
        if not run.get("source"):  # pretrain jobs: the run as pretrain.py normalises it
            normal = normalize_run(dag.run_slice(SimpleNamespace(run=name, dataset=dataset)))
            training = from_mapping(TrainingConfig, normal["training"])
            assert training.batch_size % max(run["gpus"], 1) == 0, name
            assert train_size // training.batch_size >= 1, name
            counts["pretrain"] += len(run["epochs"])
        spec = dag.evaluation(name)
        steps = spec["steps"]
        pairs = (
            [(layer, t) for layer in range(1, len(widths) + 1) for t in dag.grid_timesteps(name)]
            if spec.get("layer_t", "grid") == "grid"
            else [(spec["layer_t"]["layer"], spec["layer_t"]["t"])]
        )
        for epoch in dag.evaluated_epochs(name):
            wildcards = SimpleNamespace(run=name, dataset=dataset, epoch=str(epoch))
            where = f"pretraining.{name}.evaluation (epoch {epoch})"
            for stage in CHECKPOINT_STAGES:
                if stage not in spec or (stage == "grid" and epoch not in dag.grid_epochs(name)):
                    continue
                walked.add(dag.stage_file(name, stage, epoch))
                settings = dag.evaluation_stage(wildcards, stage)
                if stage == "fid":  # sample_fid.py: SamplingConfig and the sampler's schedule
                    sampling = from_mapping(SamplingConfig, settings, "sampling")
                    sigmas = sampling_schedule(
                        framework, sampling.sampler, sampling.steps, sampling.ddim_table
                    )
                    # the authors' DDIM ends at ᾱ = 1 − β_1 (ddae.sampling), every other at 0
                    if ddim_table_of(framework, sampling.sampler, sampling.ddim_table) == "authors":
                        end = math.sqrt(framework.config.beta_min / (1 - framework.config.beta_min))
                    else:
                        end = 0.0
                    assert torch.isfinite(sigmas).all(), where
                    assert float(sigmas[-1]) == pytest.approx(end, rel=1e-12, abs=0), where
                    assert torch.all(sigmas[:-1] > sigmas[1:]), where
                    if run["framework"]["kind"] == "ddpm":  # starts in the top T // steps levels
                        T = run["framework"]["timesteps"]
                        top = framework.sigmas[T - max(T // sampling.steps, 1)]
                        assert float(sigmas[0]) >= float(top), where
                    else:
                        assert float(sigmas[0]) == pytest.approx(framework.sigma_max), where
                elif stage == "grid":  # probe_timestep.py per t, then grid_search.py
                    from_mapping(GridSearchConfig, settings, "probe")
                    cache = from_mapping(
                        FeatureCacheConfig, dag.evaluation_stage(wildcards, "features"), "features"
                    )
                    rows = cache.views * train_size + test_size
                    assert rows * sum(widths) * 2 <= FEATURE_CACHE_BUDGET, (where, sum(widths))
                    for t in dag.grid_timesteps(name):
                        check_pair(net, framework, 1, t, steps, where)
                        counts["probe_timestep"] += 1
                else:
                    configs = {"linear_probe": LinearProbeConfig, "align_uniform": AlignUniform}
                    from_mapping(configs[stage], settings, stage)
                    choice = (
                        dag.layer_t_choice_final(wildcards)
                        if stage == "align_uniform"
                        else dag.layer_t_choice(wildcards)
                    )
                    for path in choice:  # the grid result it reads is a planned job
                        assert path.replace(".json", ".csv") in dag.evaluation_targets(), path
                    for layer, t in pairs:
                        check_pair(net, framework, layer, t, steps, where)
                counts[stage] += 1
        for stage in FINAL_STAGES:
            if stage not in spec:
                continue
            wildcards = SimpleNamespace(run=name, dataset=dataset, epoch=str(dag.final_epoch(name)))
            walked.add(dag.stage_file(name, stage))
            settings = dag.evaluation_stage(wildcards, stage)
            if stage == "noisy":
                from_mapping(NoisyHeadConfig, settings, "noisy_head")
            else:
                from_mapping(ClassifierTrainingConfig, settings, stage)
            for layer, t in pairs:
                check_pair(net, framework, layer, t, steps, f"pretraining.{name}.{stage}")
                encoder = net.truncated(layer)  # the fine-tuned / scratch encoder (Tables 7-8)
                assert encoder.layer == layer
            counts[stage] += 1
        if "latents" in spec:
            from_mapping(LatentCacheConfig, spec["latents"], "latents")
    expected = {path for path in dag.evaluation_targets() if "/baselines/" not in path}
    assert walked == expected  # every evaluation job of the DAG was walked
    return dict(counts)


@pytest.fixture(scope="module")
def paper_jobs() -> dict[str, int]:
    return walk_paper_jobs(PAPER_CONFIG)


def test_every_paper_scale_job_builds_its_settings(paper_jobs):
    """Issue 11's guard: fails on Figure 4's T = 64 FID (100 DDIM steps > T) before the fix."""
    check_paper_shape(PAPER_CONFIG)
    counts = paper_jobs
    assert counts["pretrain"] == 56 and counts["fid"] == 40 and counts["grid"] == 12
    # the dry run's linear_probe 40 + 2 of DiT, probe_timestep 241 + 22 of DiT (one rule each)
    assert counts["linear_probe"] == 42 and counts["probe_timestep"] == 241 + 22


def test_smoke_and_miniature_jobs_build_their_settings(paper_jobs):
    check_paper_shape(SMOKE_CONFIG)
    mini = miniature_config(PAPER_CONFIG)
    check_paper_shape(mini)
    counts = walk_paper_jobs({**mini, "datasets": PAPER_CONFIG["datasets"]})
    assert counts == paper_jobs | {"pretrain": 58}  # + the 2 official runs, trained here
    # structure kept: every T, sampler, step count, grid and layer choice of every run
    for name, run in PAPER_CONFIG["pretraining"].items():
        small = mini["pretraining"][name]
        assert small["framework"] == run["framework"], name
        assert len(small["epochs"]) == len(run["epochs"]), name
        assert decoder_layer_count(small["network"]) == decoder_layer_count(run["network"])
        for key in ("steps", "grid_t", "layer_t", "grid_checkpoints", "checkpoints"):
            assert small["evaluation"].get(key) == run["evaluation"].get(key), (name, key)
        for key in ("sampler", "steps", "clip_denoised"):
            assert small["evaluation"].get("fid", {}).get(key) == run["evaluation"].get(
                "fid", {}
            ).get(key), (name, key)


def test_miniature_plans_the_paper_dag_offline(tmp_path, paper_jobs):
    """The cheap part of the miniature for CI: its workdir and dry run (the full run: README)."""
    write_miniature(REPO / "config.yaml", tmp_path)
    classes = {
        name: len(ImageDataset.load(tmp_path / "resources" / "data" / name / "train.npz").classes)
        for name in ("cifar10", "tiny_imagenet")
    }
    assert classes == {"cifar10": 10, "tiny_imagenet": 200}
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d"]
    result = subprocess.run(
        [*command, str(tmp_path), "-n", "--quiet", "rules"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout + result.stderr, re.MULTILINE))
    assert not any(rule.startswith("download") for rule in jobs)  # offline
    assert int(jobs["pretrain"]) == paper_jobs["pretrain"] + 2
    assert int(jobs["probe_timestep"]) == 241 + 22
    assert int(jobs["sample_fid"]) == 40 and int(jobs["grid_search"]) == 12
    assert int(jobs["stand_in_checkpoint"]) == 2 and int(jobs["stand_in_vae"]) == 1


def test_decoder_defaults_match_the_networks():
    for arch, defaults in _DECODER_DEFAULTS.items():
        config = NETWORKS[arch].Config()
        for key, value in defaults.items():
            assert tuple(np.atleast_1d(getattr(config, key))) == tuple(np.atleast_1d(value))


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda c: c["pretraining"]["cifar10_ddpm_t64"]["evaluation"].update(steps=100),
            "pretraining.cifar10_ddpm_t64.evaluation.steps",
        ),
        (
            lambda c: c["pretraining"]["cifar10_edm"]["evaluation"]["fid"].update(steps=1),
            "pretraining.cifar10_edm.evaluation.fid.steps",
        ),
        (
            lambda c: c["pretraining"]["cifar10_ddpmpp_edm"]["evaluation"].update(
                layer_t={"layer": 16, "t": 4}
            ),
            "pretraining.cifar10_ddpmpp_edm.evaluation.layer_t.layer",
        ),
        (
            lambda c: c["pretraining"]["cifar10_ddpmpp_edm"]["evaluation"].update(
                layer_t={"layer": 6, "t": 19}
            ),
            "pretraining.cifar10_ddpmpp_edm.evaluation.layer_t.t",
        ),
        (
            lambda c: c["pretraining"]["cifar10_dit"]["evaluation"].update(
                grid_t={"start": 2, "stop": 1002, "every": 30}
            ),
            "pretraining.cifar10_dit.evaluation.grid_t.stop",
        ),
    ],
)
def test_shape_errors_name_the_key(edit, key):
    config = copy.deepcopy(PAPER_CONFIG)
    edit(config)
    with pytest.raises(ConfigError, match=re.escape(key)):
        check_paper_shape(config)


def test_dry_run_stops_naming_the_key(tmp_path):
    config = copy.deepcopy(PAPER_CONFIG)
    config["pretraining"]["cifar10_ddpmpp_ddpm"]["evaluation"]["layer_t"] = {"layer": 16, "t": 11}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d"]
    result = subprocess.run(
        [*command, str(tmp_path), "-n"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    assert "pretraining.cifar10_ddpmpp_ddpm.evaluation.layer_t.layer: 16 is outside 1..15" in (
        result.stdout + result.stderr
    )


def test_figure4_ablations_probe_every_checkpoint_at_their_final_grid(tmp_path):
    """Figure 4 compares each ablation's best probe: one grid search at the final checkpoint,
    whose (layer, t) every checkpoint's linear probe reads (paper Sec. 4.1.1, App. B)."""
    dag = workflow_helpers(PAPER_CONFIG)
    for label, run in PAPER_CONFIG["figures"]["figure4"].items():
        final = dag.final_epoch(run)
        assert dag.grid_epochs(run) == [final], label
        for epoch in PAPER_CONFIG["pretraining"][run]["epochs"]:
            wildcards = SimpleNamespace(run=run, dataset="cifar10", epoch=str(epoch))
            assert dag.layer_t_choice(wildcards) == [
                f"results/cifar10/{run}/grid/epoch{final}.json"
            ], (label, epoch)
        sigmas = [
            build_framework(PAPER_CONFIG["pretraining"][run]["framework"]).sigma_at_timestep(
                t, PAPER_CONFIG["pretraining"][run]["evaluation"]["steps"]
            )
            for t in dag.grid_timesteps(run)
        ]
        assert max(sigmas) == pytest.approx(0.72, abs=0.02), label  # the main grid's σ range


def test_cifar10_ddpm_runs_trained_here_use_the_authors_recipe():
    """FutureXiang/ddae config/DDPM_ddpm.yaml on 4 GPUs (README), lr x GPUs (train.py): global
    batch 512, lr 4e-4, 13 warm-up epochs, EMA 0.9999 with ema_pytorch's 2/3 warm-up, clip 1."""
    for name, run in PAPER_CONFIG["pretraining"].items():
        if run["dataset"] != "cifar10" or run["network"]["arch"] != "ddpm_unet":
            continue
        training = from_mapping(TrainingConfig, run["training"])
        assert (training.batch_size, training.lr, training.warmup_epochs) == (512, 4e-4, 13), name
        assert (training.ema_decay, training.grad_clip) == (0.9999, 1.0), name
        assert training.ema_warmup_power == pytest.approx(2 / 3), name
