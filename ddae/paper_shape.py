"""The paper's shape: config-only checks of config.yaml and its miniature (paper Sec. 4, App. A-B).

The smoke run checks plumbing on a shape that is not the paper's (tiny T, few steps, digits);
defects that only appear at the paper's shape (Figure 4's T = 64 with 100 DDIM steps, DiT's 28
layers, Table 9's grids) need the paper's settings themselves. This module gives two things:

* `check_paper_shape(config)`: the checks that need nothing but the config, run by the
  Snakefile right after schema validation so that ``snakemake -n`` stops before any job: every
  size within its bound (`ddae.config_bounds`, first), each run's Table 9 "t/steps"
  denominator against its framework (DDPM: T), FID sampler levels against what the framework
  can sample, grid and fixed timesteps within 1..steps, fixed layers within the network's
  decoder blocks, and `grid_checkpoints` only with a grid search. Each
  error is a `ddae.configs.ConfigError` naming the key path, e.g.
  ``pretraining.cifar10_ddpm_t64.evaluation.fid.steps``. Pure Python: no torch import (every
  cluster job re-parses the Snakefile).
* `miniature_config(config)`: the same DAG with every size shrunk and every structural setting
  kept — all runs and their checkpoint lists (renumbered 1..n), every T, β range and EDM
  schedule, sampler and step count, t grid, layer choice and Figure 4 protocol, all decoder
  layers (channel multipliers and blocks per resolution; DiT's 28 blocks), the DiT path on a
  stand-in DiT and VAE — with narrow networks, a few images, few augmented views, one epoch per
  classifier and the offline ``random_conv`` FID extractor. ``python -m ddae.paper_shape
  miniature WORKDIR`` writes it, with stand-in datasets of the right resolution and class count,
  into a Snakemake workdir (README, "Paper-shape miniature").
"""

from __future__ import annotations

import argparse
import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from ddae.config_bounds import check_config_sizes
from ddae.configs import ConfigError
from ddae.datasets.registry import DATASETS
from ddae.pipeline.stages import ONE_EPOCH, STAGES, evaluation_stages

# Decoder-block defaults of each architecture's Config (ddae.networks; checked against the
# dataclasses by tests/test_paper_shape.py), for specs that leave them out.
_DECODER_DEFAULTS = {
    "ddpm_unet": {"channel_mult": (1, 2, 2, 2), "num_blocks": 2},  # Ho et al.'s CIFAR-10 UNet
    "ddpmpp": {"channel_mult": (2, 2, 2), "num_blocks": 4},  # EDM's CIFAR-10 DDPM++
    "dit": {"depth": 28},  # DiT-XL/2
}


def decoder_layer_count(network: Mapping[str, Any]) -> int:
    """How many decoder blocks ("layer k/N", Table 9) a network spec has, without building it.

    DDPM UNet and DDPM++: num_blocks + 1 per resolution (12 for Ho's UNet, 15 for CIFAR-10's
    DDPM++, 20 at 64 px); DiT: its depth (28).
    """
    arch = network["arch"]
    if arch not in _DECODER_DEFAULTS:
        raise ConfigError(f"network.arch: {arch!r} has no decoder blocks to probe")
    spec = {**_DECODER_DEFAULTS[arch], **network}
    if arch == "dit":
        return int(spec["depth"])
    return len(spec["channel_mult"]) * (int(spec["num_blocks"]) + 1)


def ddpm_sampling_level_count(timesteps: int, steps: int) -> int:
    """Levels of a `steps`-step DDIM over T levels (`ddae.diffusion.DDPM.sampling_levels`)."""
    return len(range(0, timesteps, max(timesteps // steps, 1)))


def _check_range(value: int, low: int, high: int, key: str, what: str) -> None:
    if not low <= value <= high:
        raise ConfigError(f"{key}: {value} is outside {low}..{high} ({what})")


def check_run_shape(name: str, run: Mapping[str, Any]) -> None:
    """Config-only checks of one pretraining run's evaluation (see the module docstring)."""
    spec = run.get("evaluation")
    if not spec:
        return
    where = f"pretraining.{name}.evaluation"
    framework = run["framework"]
    steps = spec["steps"]
    if framework["kind"] == "ddpm":
        T = framework.get("timesteps", 1000)
        if steps != T:
            raise ConfigError(
                f"{where}.steps: DDPM timesteps count out of T = {T} (Table 9's t/T), got {steps}"
            )
    elif steps < 2:
        raise ConfigError(f"{where}.steps: EDM's Heun schedule needs at least 2 levels")
    fid = spec.get("fid")
    if fid and framework["kind"] == "edm" and fid["steps"] < 2:
        raise ConfigError(
            f"{where}.fid.steps: EDM's sampling schedule needs at least 2 levels, got "
            f"{fid['steps']}"
        )
    grid = spec.get("grid_t")
    if grid:
        _check_range(grid["start"], 1, steps, f"{where}.grid_t.start", f"t out of {steps}")
        _check_range(grid["stop"], grid["start"], steps, f"{where}.grid_t.stop", "start..steps")
    layers = decoder_layer_count(run["network"])
    layer_t = spec.get("layer_t", "grid")
    if layer_t != "grid":
        _check_range(
            layer_t["layer"],
            1,
            layers,
            f"{where}.layer_t.layer",
            f"the network's {layers} decoder blocks",
        )
        _check_range(layer_t["t"], 1, steps, f"{where}.layer_t.t", f"t out of {steps}")
    elif "grid" not in spec:
        raise ConfigError(f"{where}.grid: layer_t 'grid' needs a grid search block")
    elif not grid:
        raise ConfigError(f"{where}.grid_t: layer_t 'grid' needs the timesteps to search")
    if "grid_checkpoints" in spec and layer_t != "grid":
        raise ConfigError(
            f"{where}.grid_checkpoints: only meaningful with layer_t 'grid', got {layer_t}"
        )


def check_paper_shape(config: Mapping[str, Any]) -> None:
    """Config-only shape checks of every pretraining run; raises `ConfigError` naming the key.

    Every size is bounded first (`ddae.config_bounds`), so that nothing here or in the rules
    computes with an absurd value (a 10⁶-timestep grid, a 10⁹-level schedule)."""
    check_config_sizes(config)
    for name, run in config.get("pretraining", {}).items():
        check_run_shape(name, run)


# --- the miniature ----------------------------------------------------------------------------

STAND_IN_MARKER = "stand_in.json"  # beside each stand-in dataset; read by ddae.report.reference
MINI_IMAGES_PER_CLASS = {"train": 4, "test": 1}  # Tiny-ImageNet (200 classes): 800 / 200
MINI_MIN_IMAGES = {"train": 120, "test": 40}  # CIFAR-10 (10 classes): 120 / 40
MINI_BATCH = 32  # every batch size is capped at this
MINI_WIDTH = {"ddpm_unet": {"base_channels": 32}, "ddpmpp": {"model_channels": 16}}
MINI_DIT = {"hidden_size": 32, "num_heads": 2}  # depth 28, patch 2, 1000 classes kept
# 256 px -> 64 px before the VAE (latents 8x8 instead of 32x32): the latents stage's miniature
MINI_LATENT_IMAGE_SIZE = STAGES["latents"].miniature.values["image_size"]
MINI_WRN = {"widen_factor": 1}  # WRN-28-1 instead of WRN-28-10 (depth 28 kept)


def _cap_batches(node: Any) -> Any:
    """Every ``batch_size`` in a nested mapping capped at MINI_BATCH."""
    if isinstance(node, dict):
        return {
            key: min(value, MINI_BATCH) if key == "batch_size" else _cap_batches(value)
            for key, value in node.items()
        }
    return node


def _mini_evaluation(spec: dict[str, Any], gpus: int) -> dict[str, Any]:
    """A run's evaluation block in miniature: each stage shrunk as its registry entry says
    (`ddae.pipeline.stages`), the jobs on `gpus` GPUs, DiT's VAE a stand-in."""
    spec = copy.deepcopy(spec)
    spec["gpus"] = gpus
    if "training_gpus" in spec:
        spec["training_gpus"] = gpus
    for name, stage in evaluation_stages().items():
        if name in spec:
            spec[name] = stage.miniature.shrink(spec[name])
    if "vae" in spec:
        spec["vae"] = "stand_in"
    return _cap_batches(spec)


def _mini_run(run: dict[str, Any], gpus: int) -> dict[str, Any]:
    run = copy.deepcopy(run)
    run["epochs"] = list(range(1, len(run["epochs"]) + 1))  # same checkpoint count
    run["gpus"] = gpus
    arch = run["network"]["arch"]
    if arch == "dit":
        run["network"] = {**run["network"], **MINI_DIT}
        run["network"]["input_size"] = MINI_LATENT_IMAGE_SIZE // 8  # SD VAE factor 8
        run["source"] = {"stand_in": "dit", "seed": 0}
    else:
        run["network"] = {**run["network"], **MINI_WIDTH[arch]}
        run.pop("source", None)  # official DDPM / EDM checkpoints: trained here instead
    if "training" in run:
        run["training"] = {**run["training"], "warmup_epochs": 1}
        run["training"]["batch_size"] = min(run["training"]["batch_size"], MINI_BATCH)
    if "evaluation" in run:
        run["evaluation"] = _mini_evaluation(run["evaluation"], gpus)
    return run


def _mini_supervised(spec: dict[str, Any], gpus: int) -> dict[str, Any]:
    spec = copy.deepcopy(spec)
    spec["gpus"] = gpus
    spec["network"] = {**spec["network"], **MINI_WRN}
    spec["training"] = ONE_EPOCH.shrink(spec["training"])
    if "noisy" in spec:
        spec["noisy"] = _mini_supervised(spec["noisy"], gpus)
    return _cap_batches(spec)


def miniature_config(config: Mapping[str, Any], gpus: int = 0) -> dict[str, Any]:
    """config.yaml's DAG in miniature (module docstring); `gpus` per job (0: CPU only)."""
    mini = copy.deepcopy(dict(config))
    mini["pretraining"] = {
        name: _mini_run(run, gpus) for name, run in config.get("pretraining", {}).items()
    }
    mini["supervised"] = {
        name: _mini_supervised(spec, gpus) for name, spec in config.get("supervised", {}).items()
    }
    mini["fid"] = {**config.get("fid", {}), "extractor": "random_conv", "gpus": gpus}
    mini["fid"] = _cap_batches(mini["fid"])
    return mini


def stand_in_split_size(split: str, classes: int) -> int:
    return max(MINI_IMAGES_PER_CLASS[split] * classes, MINI_MIN_IMAGES[split])


def write_stand_in_dataset(
    directory: str | Path, resolution: int, classes: int, seed: int = 0
) -> None:
    """Class-dependent synthetic images in the uniform format (``train.npz``, ``test.npz``).

    Class c is a fixed random 4×4 colour template, upsampled to `resolution`, plus per-image
    noise and a random shift: learnable, so probes and classifiers have something to find.
    """
    import torch
    import torch.nn.functional as F

    from ddae.datasets.format import ImageDataset, split_path

    generator = torch.Generator().manual_seed(seed)
    templates = torch.rand(classes, 3, 4, 4, generator=generator)
    templates = F.interpolate(templates, size=resolution, mode="bilinear", align_corners=False)
    for split in ("train", "test"):
        count = stand_in_split_size(split, classes)
        labels = torch.arange(count) % classes
        noise = 0.15 * torch.randn(count, 3, resolution, resolution, generator=generator)
        images = templates[labels] + noise
        shifts = torch.randint(-2, 3, (count, 2), generator=generator)
        images = torch.stack(
            [
                torch.roll(image, (int(dy), int(dx)), (1, 2))
                for image, (dy, dx) in zip(images, shifts, strict=True)
            ]
        )
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        names = [f"class{c:03d}" for c in range(classes)]
        Path(directory).mkdir(parents=True, exist_ok=True)
        ImageDataset(pixels, labels.to(torch.int64), names).save(split_path(directory, split))
    # The tables never place a stand-in's numbers beside the paper's (ddae.report.reference)
    marker = {"stand_in": True, "resolution": resolution, "classes": classes, "seed": seed}
    marker["written_by"] = "ddae.paper_shape.write_stand_in_dataset"
    (Path(directory) / STAND_IN_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def stand_in_marker(workdir: str | Path, dataset: str) -> Path:
    """Where `write_stand_in_dataset` leaves its marker in a workdir: beside the dataset's
    ``resources/data/<dataset>/`` splits (a workdir's real datasets have none)."""
    return Path(workdir) / "resources" / "data" / dataset / STAND_IN_MARKER


# Class counts of the paper's datasets (paper Sec. 4, from ddae.datasets.registry): the
# stand-ins keep them.
DATASET_CLASSES = {name: entry.classes for name, entry in DATASETS.items() if entry.download}


def write_miniature(config_path: str | Path, workdir: str | Path, gpus: int = 0) -> dict[str, Any]:
    """Write `miniature_config` of `config_path` to ``workdir/config.yaml`` with stand-in
    datasets under ``workdir/resources/data`` (so no download rule runs)."""
    config = yaml.safe_load(Path(config_path).read_text())
    mini = miniature_config(config, gpus)
    check_paper_shape(mini)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Paper-shape miniature of {config_path}, written by `python -m ddae.paper_shape "
        "miniature`: the same DAG with every size shrunk (README, 'Paper-shape miniature').\n"
        "# Numbers from it check the pipeline, not the paper.\n"
    )
    (workdir / "config.yaml").write_text(header + yaml.safe_dump(mini, sort_keys=False))
    for name, spec in mini["datasets"].items():
        if name not in DATASET_CLASSES:
            raise ConfigError(f"datasets.{name}: no stand-in class count for {name!r}")
        write_stand_in_dataset(
            stand_in_marker(workdir, name).parent, spec["resolution"], DATASET_CLASSES[name]
        )
    return mini


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ddae.paper_shape", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    miniature = commands.add_parser("miniature", help="write the paper-shape miniature workdir")
    miniature.add_argument("workdir", type=Path)
    miniature.add_argument("--config", type=Path, default=Path("config.yaml"))
    miniature.add_argument("--gpus", type=int, default=0, help="GPUs per job (0: CPU only)")
    args = parser.parse_args(argv)
    mini = write_miniature(args.config, args.workdir, args.gpus)
    jobs = sum(len(run["epochs"]) for run in mini["pretraining"].values())
    print(
        f"wrote {args.workdir}/config.yaml ({len(mini['pretraining'])} runs, {jobs} checkpoints)"
        f"; run: snakemake --cores all --directory {args.workdir}"
    )


if __name__ == "__main__":
    main()
