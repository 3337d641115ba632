"""Noise-conditional classifiers on noisy images (paper Sec. 4.1.3, Eq. 5, Figure 6).

DDAE features come from a noisy input, so the frozen network can serve as the classifier of
classifier guidance, p_t(y | x_t). Eq. 5: p_t(y|x_t) = g(y | f_t(x_t) + τ(t)), with f_t the frozen
DDAE encoder (global-average-pooled output of the chosen decoder block, "extracted in the same
way as linear probing"), τ(t) a timestep embedding and g a two-layer MLP. Figure 6 compares the
accuracy per noise level with noise-conditional WideResNets (Song et al. 2021, the paper's [53])
trained under the same VP (DDPM) or VE (EDM) perturbation.

`train_noisy_head` — the DDAE head. What the official code (FutureXiang/ddae
``noisy_classifier_DDAE.py``, ``model/block.py``) does, and this module re-implements:

* head = ``TimeEmbedding(d)`` (sinusoid of the integer timestep with d/8 frequencies
  10000^(−i/(d/8 − 1)), [sin, cos] → Linear(d/4, d) → SiLU → Linear(d, d)) added to the d pooled
  features, then Linear(d, 2d) → SiLU → Linear(2d, classes);
* training: every image gets its own t ~ U{1..T} (DDPM, T = 1000) or U{1..18} (EDM: the 18 Heun
  levels, t = 1 is σ_min), fresh noise, RandomHorizontalFlip + RandomCrop(size, 4); Adam at
  lr × GPUs (1e-3 × 4 at 128 images per GPU), ``CosineAnnealingLR(epochs)`` stepped per epoch,
  for the linear-probe epochs of Table 6 (CIFAR-10: DDPM 10, EDM 15);
* test, per level: DDPM t ∈ arange(0, T, T // 20) + 1 = {1, 51, …, 951}; EDM every t in 1..18.

Here images enter the frozen network exactly as in denoising and linear probing: x = x0 + σ_t ε
(VE view) through ``framework.network_inputs`` (`ddae.diffusion`), pooled by
`ddae.features.DecoderFeatures` (which stops the pass after the chosen block). The timestep
embedding receives the integer t of "t/steps" (Table 9), as the official head does. Not in the
paper, ``standardize`` (`NoisyHeadConfig`) standardises the features per noise level before the
head (`ddae.noise_levels.level_statistics`).

`train_noisy_wrn` — the supervised baseline (official ``noisy_classifier_WRN.py``): a
noise-conditional WideResNet-28-10 (`ddae.networks.noisy_wide_resnet`) trained from scratch on
perturbed images: VP: √ᾱ_t x0 + √(1−ᾱ_t) ε with t ~ U{1..T} on the DDPM β schedule, condition
t/T; VE: x0 + σ ε with ln σ ~ N(P_mean, P_std²) (EDM training distribution), condition ln σ.
SGD lr 0.1, momentum 0.9, weight decay 5e-4, 5 linear warm-up epochs then cosine, 200 epochs
(Table 8 settings; the lr is NOT scaled by the GPU count in that script). It is tested at the
same levels as the head (VE: the σ of Heun level t, condition ln σ).

Both are models that the project's one classifier loop trains (`ddae.classifier_training.
ClassifierTrainer`: partial state and resumption with ``state_dir``, per-epoch metrics):
`NoisyHeadClassifier` (the frozen DDAE network outside its parameters, the head trained) and
`NoisyWRNClassifier`, fed by `ddae.noise_levels.NoisyImageData`, which draws flip/crop, the level
and ε per global batch from the trainer's generator and hands the model the noisy image with its
condition as one extra plane (`pack_condition`). Learning rates follow `ddae.learning_rate`. An
epoch is a fresh permutation in batches, the last one partial (`ddae.batching.EpochBatches`), as the
official DataLoaders (``drop_last=False``) and the loops this replaced: the results are bitwise
those of those loops. Both run in one process on one device (with the hand-written loop this
replaced, two WRN-28-10 epochs over 5,120 images plus 20 test levels took ~5 s on one H200 in bf16,
so 200 CIFAR-10 epochs are roughly an hour; the head is minutes; not re-measured on the trainer).

Both write a CSV with columns ``t, steps, sigma, test_accuracy`` (percent; sigma in the VE view,
σ_t = √((1 − ᾱ_t)/ᾱ_t) for DDPM); the test noise is seeded per level, so results are
reproducible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddae.batching import to_model_range
from ddae.checkpoints import load_network
from ddae.classifier_training import (
    PARTIAL_STATE,
    ClassifierOptions,
    ClassifierTrainer,
    ClassifierTrainingConfig,
    ImageData,
)
from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.datasets.format import ImageDataset
from ddae.diffusion import DDPM, Framework, build_framework
from ddae.distributed import World
from ddae.downloads import file_md5
from ddae.features import DecoderFeatures
from ddae.networks import build_network, network_config
from ddae.noise_levels import (
    LevelNoise,
    NoisyImageData,
    Perturbation,
    accuracy_per_level,
    evaluation_timesteps,
    level_statistics,
    pack_condition,
    unpack_condition,
)
from ddae.result_writers import write_csv
from ddae.settings.noisy_heads import NoisyHeadConfig

log = logging.getLogger(__name__)

CSV_COLUMNS = ["t", "steps", "sigma", "test_accuracy"]
EDM_TEST_STEPS = 18  # Figure 6 bottom: the 18 Heun levels of EDM's CIFAR-10 sampler


# --- the head (Eq. 5) --------------------------------------------------------------------------


class TimestepEmbedding(nn.Module):
    """τ(t) of Eq. 5, the official head's ``TimeEmbedding(dim, augment_dim=0)`` form.

    t (B,) → [sin(t·f_i), cos(t·f_i)] with dim // 8 frequencies f_i = 10000^(−i/(dim//8 − 1)),
    then Linear(2·(dim // 8), dim) → SiLU → Linear(dim, dim).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 8
        if half < 2:
            raise ValueError(f"the timestep embedding needs dim >= 16, got {dim}")
        exponent = torch.arange(half, dtype=torch.float32) * (-math.log(10000.0) / (half - 1))
        self.register_buffer("frequencies", exponent.exp(), persistent=False)
        self.lin1 = nn.Linear(2 * half, dim)
        self.lin2 = nn.Linear(dim, dim)

    def forward(self, t: Tensor) -> Tensor:
        angles = t.float()[:, None] * self.frequencies[None, :]  # (B, dim // 8)
        embedding = torch.cat([angles.sin(), angles.cos()], dim=1)
        return self.lin2(F.silu(self.lin1(embedding)))  # (B, dim)


class NoisyHead(nn.Module):
    """g(f + τ(t)): Linear(d, 2d) → SiLU → Linear(2d, classes) on features plus τ(t) (Eq. 5)."""

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.embedding = TimestepEmbedding(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, num_classes)
        )

    def forward(self, features: Tensor, t: Tensor) -> Tensor:
        return self.mlp(features + self.embedding(t))  # (B, num_classes)


# --- training and testing, shared by both classifiers ------------------------------------------


def write_accuracy_csv(rows: Sequence[Mapping[str, Any]], out_csv: str | Path) -> Path:
    """Write ``t, steps, sigma, test_accuracy`` rows atomically (temporary file, rename)."""
    write_csv(out_csv, CSV_COLUMNS, rows)
    return Path(out_csv)


def _autocast(device: torch.device, bf16: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


def _train(
    build: Callable[[], nn.Module],
    data: NoisyImageData,
    config: ClassifierTrainingConfig,
    device: torch.device,
    identity: Mapping[str, Any],
    progress: bool,
    metrics: str | Path | None,
    state_dir: str | Path | None,
    test: Callable[[nn.Module], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Train a noise-conditional classifier with `ClassifierTrainer` (one process), then
    ``test`` the trained network (eval mode) while its partial state is still held, as
    fine-tuning writes its result: with ``state_dir`` an interrupted run resumes from its
    partial state, and a finished one leaves no state folder behind."""
    world = World(rank=0, size=1, device=device)
    trainer = ClassifierTrainer(build, data, None, config, world, identity)
    state = Path(state_dir) if state_dir is not None else None
    options = ClassifierOptions(
        state_dir=state,
        metrics_path=Path(metrics) if metrics is not None else None,
        eval_every=0,  # the trainer's test once, after the last epoch
        progress=progress,
    )
    with trainer.resumed(options):
        trainer.run(options)
        return test(trainer.network.eval())


def _test_and_write(
    logits: Callable[[Tensor, int, Tensor], Tensor],
    data: NoisyImageData,
    sigmas: Sequence[float],
    steps: int,
    batch_size: int,
    out_csv: str | Path,
    state_dir: str | Path | None,
) -> list[dict[str, Any]]:
    """Figure 6's accuracy at every test level, written as CSV; then the partial state goes (the
    result is written: a rerun starts afresh)."""
    test = data.clean
    rows = accuracy_per_level(
        logits,
        test.test_images,
        test.test_labels,
        data.levels,
        sigmas,
        steps,
        batch_size,
        data.seed,
        data.device,
    )
    write_accuracy_csv(rows, out_csv)
    if state_dir is not None:  # inside `_train`'s hold: its folder goes when the hold ends
        (Path(state_dir) / PARTIAL_STATE).unlink(missing_ok=True)
    return rows


def _level_logits(
    model: nn.Module,
    noise: LevelNoise | Perturbation,
    device: torch.device,
    bf16: bool,
    channels_last: bool = False,
) -> Callable[[Tensor, int, Tensor], Tensor]:
    """``logits(x0, t, ε)`` of a noise-conditional classifier at test level t."""

    def logits(x0: Tensor, t_level: int, eps: Tensor) -> Tensor:
        level, condition = noise.test_level(t_level, len(x0), device)
        inputs = pack_condition(noise.apply(x0, level, eps), condition)
        if channels_last and device.type == "cuda":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with _autocast(device, bf16):
            return model(inputs)

    return logits


# --- the DDAE head -----------------------------------------------------------------------------


class NoisyHeadClassifier(nn.Module):
    """Eq. 5 as one model: frozen DDAE features of the noisy image at its level t, then the
    trainable `NoisyHead`. The frozen network is held outside the module's parameters, state
    and memory-format changes: the trainer trains, saves and resumes the head alone.

    ``level_stats`` (not in the paper; `NoisyHeadConfig.standardize`): the (steps, d) mean and
    1/std of `ddae.noise_levels.level_statistics`; features at level t enter the head as
    (f − mean[t]) · scale[t]. Recomputed, not saved: the head's state is the official one."""

    def __init__(
        self,
        features: DecoderFeatures,
        framework: Framework,
        sigmas: Tensor,
        dim: int,
        num_classes: int,
        level_stats: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.head = NoisyHead(dim, num_classes)
        self._frozen = (features, framework, sigmas)  # a tuple: not registered as submodules
        self._level_stats = level_stats

    def forward(self, inputs: Tensor) -> Tensor:
        x, condition = unpack_condition(inputs)  # x = x0 + σ_t ε, condition t
        t = condition.round().long()
        pooled = frozen_features(*self._frozen, x, t)
        with torch.autocast(x.device.type, enabled=False):  # the head in fp32, as the official
            if self._level_stats is not None:
                mean, scale = self._level_stats
                pooled = (pooled - mean[t - 1]) * scale[t - 1]
            return self.head(pooled, t)


def frozen_features(
    features: DecoderFeatures, framework: Framework, sigmas: Tensor, x: Tensor, t: Tensor
) -> Tensor:
    """(B, d) float32 pooled features of the frozen network at noisy images x of levels t."""
    with torch.no_grad():
        (pooled,) = features(*framework.network_inputs(x, sigmas[t - 1]))
    return pooled.float()


def train_noisy_head(
    checkpoint: str | Path,
    train_path: str | Path,
    test_path: str | Path,
    layer: int,
    steps: int,
    config: Mapping[str, Any],
    out_csv: str | Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
    metrics: str | Path | None = None,
    state_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Train Eq. 5's head on frozen layer-``layer`` features with random t; test per level.

    ``steps`` is T for DDPM (t ~ U{1..T}) and the number of Heun levels for EDM (18 in the
    paper). Returns the CSV rows (t, steps, sigma, test_accuracy in percent).
    """
    cfg = from_mapping(NoisyHeadConfig, config, "noisy_head")
    training = cfg.training_config()
    device = torch.device(device)
    net, framework, _ = load_network(checkpoint, cfg.weights, map_location=device, frozen=True)
    levels = evaluation_timesteps(framework, steps, cfg.test_levels)
    sigmas = torch.tensor(
        [framework.sigma_at_timestep(t, steps) for t in range(1, steps + 1)],
        dtype=torch.float64,
        device=device,
    )
    train, test = ImageDataset.load(train_path), ImageDataset.load(test_path)
    noise = LevelNoise(sigmas)
    data = NoisyImageData(ImageData(train, test, training, device), noise, levels, training.seed)
    with DecoderFeatures(net, [layer]) as features:
        probe = to_model_range(test.images[:2].to(device))
        with torch.no_grad(), _autocast(device, cfg.bf16):
            (pooled,) = features(*framework.network_inputs(probe, sigmas[[0, 0]]))
        dim = pooled.shape[1]
        log.info(
            "noisy head on layer %d (%s), d=%d, %d levels", layer, features.names[0], dim, steps
        )
        identity = {
            "model": "noisy_head",
            "checkpoint_md5": file_md5(checkpoint),
            "weights": cfg.weights,
            "layer": layer,
            "steps": steps,
            "config": to_mapping(training),
            "train_md5": file_md5(train_path),
        }

        level_stats = None
        if cfg.standardize:
            identity["standardize_images"] = cfg.standardize_images
            with _autocast(device, cfg.bf16):
                level_stats = level_statistics(
                    partial(frozen_features, features, framework, sigmas),
                    noise,
                    train.images[: cfg.standardize_images].to(device),
                    levels,  # EDM: every level; DDPM: the test levels
                    cfg.seed,
                    cfg.eval_batch_size,
                )

        def build() -> nn.Module:
            return NoisyHeadClassifier(
                features, framework, sigmas, dim, len(train.classes), level_stats
            )

        def test(model: nn.Module) -> list[dict[str, Any]]:
            return _test_and_write(
                _level_logits(model, noise, device, cfg.bf16),
                data,
                [float(sigmas[t_level - 1]) for t_level in levels],
                steps,
                cfg.eval_batch_size,
                out_csv,
                state_dir,
            )

        return _train(build, data, training, device, identity, progress, metrics, state_dir, test)


# --- the noise-conditional WideResNet baseline -------------------------------------------------


def train_noisy_wrn(
    perturbation: Literal["vp", "ve"],
    network: Mapping[str, Any],
    framework: Mapping[str, Any],
    train_path: str | Path,
    test_path: str | Path,
    config: Mapping[str, Any],
    out_csv: str | Path,
    device: str | torch.device = "cpu",
    progress: bool = True,
    steps: int | None = None,
    test_levels: int = 20,
    metrics: str | Path | None = None,
    state_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Train a noise-conditional WRN under the VP or VE perturbation; test per level (Fig. 6).

    ``network``: ``{"arch": "noisy_wide_resnet", ...}``; ``framework``: the DDPM (vp) or EDM (ve)
    spec whose schedule perturbs the images; ``config``: a `ClassifierTrainingConfig` mapping
    (paper: optimizer sgd, lr 0.1, momentum 0.9, weight_decay 5e-4, warmup_epochs 5,
    epochs 200, batch_size 512). ``steps``: T (vp; default) or the Heun levels tested (ve;
    default 18). Returns the CSV rows.
    """
    cfg = from_mapping(ClassifierTrainingConfig, config, "training")
    device = torch.device(device)
    diffusion = build_framework(framework)
    if steps is None:
        steps = diffusion.config.timesteps if isinstance(diffusion, DDPM) else EDM_TEST_STEPS
    noise = Perturbation(perturbation, diffusion, steps)
    levels = evaluation_timesteps(diffusion, steps, test_levels)
    train, test = ImageDataset.load(train_path), ImageDataset.load(test_path)
    classes = getattr(network_config(network, "network"), "num_classes", len(train.classes))
    if classes != len(train.classes):
        raise ConfigError(f"network.num_classes {classes} != {len(train.classes)} classes")
    log.info("noisy WRN (%s) %s: %s", perturbation, dict(network), to_mapping(cfg))
    identity = {
        "model": "noisy_wrn",
        "perturbation": perturbation,
        "network": dict(network),
        "framework": dict(framework),
        "steps": steps,
        "config": to_mapping(cfg),
        "train_md5": file_md5(train_path),
    }
    data = NoisyImageData(ImageData(train, test, cfg, device), noise, levels, cfg.seed)
    sigmas = [diffusion.sigma_at_timestep(t_level, steps) for t_level in levels]

    def test(model: nn.Module) -> list[dict[str, Any]]:
        logits = _level_logits(model, noise, device, cfg.bf16, cfg.channels_last)
        return _test_and_write(logits, data, sigmas, steps, 500, out_csv, state_dir)

    return _train(
        lambda: NoisyWRNClassifier(network),
        data,
        cfg,
        device,
        identity,
        progress,
        metrics,
        state_dir,
        test,
    )


class NoisyWRNClassifier(nn.Module):
    """The noise-conditional WideResNet (`ddae.networks.noisy_wide_resnet`) on a packed
    noisy image + condition input (`pack_condition`)."""

    def __init__(self, network: Mapping[str, Any]) -> None:
        super().__init__()
        self.wrn = build_network(network, "network")

    def forward(self, inputs: Tensor) -> Tensor:
        return self.wrn(*unpack_condition(inputs))
