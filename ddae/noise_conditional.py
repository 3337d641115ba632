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
embedding receives the integer t of "t/steps" (Table 9), as the official head does.

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
`NoisyWRNClassifier`, fed by `NoisyImageData`, which draws flip/crop, the level and ε per global
batch from the trainer's generator and hands the model the noisy image with its condition as
one extra plane (`pack_condition`). Learning rates follow `ddae.learning_rate`. An epoch is a
fresh permutation in batches, the last one partial (`ddae.batching.EpochBatches`), as the official
DataLoaders (``drop_last=False``) and the loops this replaced: the results are bitwise those of
those loops. Both run in one process on one device (with the hand-written loop this replaced, two
WRN-28-10 epochs over 5,120 images plus 20 test levels took ~5 s on one H200 in bf16, so 200
CIFAR-10 epochs are roughly an hour; the head is minutes; not re-measured on the trainer).

Both write a CSV with columns ``t, steps, sigma, test_accuracy`` (percent; sigma in the VE view,
σ_t = √((1 − ᾱ_t)/ᾱ_t) for DDPM); the test noise is seeded per level, so results are
reproducible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddae.batching import to_model_range
from ddae.checkpoints import load_network
from ddae.classifier_training import (
    PARTIAL_STATE,
    ClassifierData,
    ClassifierOptions,
    ClassifierTrainer,
    ClassifierTrainingConfig,
    ImageData,
)
from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.datasets.format import ImageDataset
from ddae.diffusion import DDPM, EDM, Framework, build_framework
from ddae.distributed import World
from ddae.downloads import file_md5
from ddae.features import DecoderFeatures
from ddae.networks import build_network, network_config
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


# --- test levels and small helpers ------------------------------------------------------------


def evaluation_timesteps(framework: Framework, steps: int, test_levels: int = 20) -> list[int]:
    """Figure 6's x axis: DDPM arange(0, T, T // levels) + 1 (T = steps); EDM 1..steps."""
    if isinstance(framework, DDPM):
        T = framework.config.timesteps
        if steps != T:
            raise ConfigError(f"steps: DDPM timesteps are out of T={T}, got {steps}")
        return list(range(1, T + 1, max(T // test_levels, 1)))
    if steps < 2:
        raise ConfigError(f"steps: EDM needs at least 2 Heun levels, got {steps}")
    return list(range(1, steps + 1))


def _level_generator(device: torch.device, seed: int, t: int) -> torch.Generator:
    mixed = int(np.random.SeedSequence([seed, 7, t]).generate_state(1, np.uint64)[0])
    return torch.Generator(device).manual_seed(mixed >> 1)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def write_accuracy_csv(rows: Sequence[Mapping[str, Any]], out_csv: str | Path) -> Path:
    """Write ``t, steps, sigma, test_accuracy`` rows atomically (temporary file, rename)."""
    write_csv(out_csv, CSV_COLUMNS, rows)
    return Path(out_csv)


def _autocast(device: torch.device, bf16: bool) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda")


# --- the classifiers' noisy inputs, as one model input for the shared trainer ---------------


def pack_condition(x: Tensor, condition: Tensor) -> Tensor:
    """(B, C, H, W) noisy images and their (B,) condition as one (B, C + 1, H, W) model input.

    `ClassifierTrainer` hands its model one tensor; the condition (the head's integer t, the
    WRN's t/T or ln σ, all exact in float32) rides along as a constant last plane.
    """
    plane = condition.to(x.dtype).reshape(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
    return torch.cat([x, plane], dim=1)


def unpack_condition(inputs: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of `pack_condition`: images (in ``inputs``' memory format) and condition."""
    images = inputs[:, :-1]
    if inputs.is_contiguous(memory_format=torch.channels_last) and not inputs.is_contiguous():
        return images.contiguous(memory_format=torch.channels_last), inputs[:, -1, 0, 0]
    return images.contiguous(), inputs[:, -1, 0, 0]


class LevelNoise:
    """How the DDAE head's images are noised (official noisy_classifier_DDAE.py): t ~ U{1..steps}
    per image, x = x0 + σ_t ε (the VE view of Eq. 1, as denoising and linear probing see it),
    condition t."""

    def __init__(self, sigmas: Tensor) -> None:
        self.sigmas, self.steps = sigmas, len(sigmas)  # σ of levels 1..steps, float64

    def train_draw(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        t = torch.randint(1, self.steps + 1, (batch,), generator=generator, device=generator.device)
        return t, t

    def test_level(self, t: int, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        level = torch.full((batch,), t, dtype=torch.long, device=device)
        return level, level

    def apply(self, x0: Tensor, level: Tensor, eps: Tensor) -> Tensor:
        return x0 + _per_sample(self.sigmas[level - 1], x0) * eps


class NoisyImageData(ClassifierData):
    """`ImageData` turned into noisy model inputs: the noisy image plus its condition
    (`pack_condition`).

    Per global batch, from the trainer's generator and in the order of the old loops: flip and
    crop (``clean``), the level of every image (``noise.train_draw``), then ε. The trainer's own
    test (after the last epoch, its metrics line) sees test image i at level
    ``levels[i % len(levels)]`` with ε seeded per image, so it is the same for any process count;
    Figure 6's per-level accuracies are `_accuracy_per_level`'s.
    """

    def __init__(
        self, clean: ImageData, noise: LevelNoise | Perturbation, levels: Sequence[int], seed: int
    ) -> None:
        self.clean, self.noise, self.levels, self.seed = clean, noise, list(levels), seed
        self.device = clean.device
        self.num_train, self.num_test = clean.num_train, clean.num_test
        self.num_classes = clean.num_classes

    def train_batch(
        self, indices: Tensor, epoch: int, generator: torch.Generator, mine: slice
    ) -> tuple[Tensor, Tensor]:
        x0, labels = self.clean.train_batch(indices, epoch, generator, slice(None))
        level, condition = self.noise.train_draw(len(indices), generator)
        eps = torch.randn(x0.shape, generator=generator, device=self.device)
        inputs = pack_condition(self.noise.apply(x0, level, eps), condition)
        return inputs[mine], labels[mine]

    def test_batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        x0, labels = self.clean.test_batch(indices)
        packed = []
        for row, index in enumerate(indices.tolist()):
            t = self.levels[index % len(self.levels)]
            level, condition = self.noise.test_level(t, 1, self.device)
            item = torch.Generator().manual_seed(_item_seed(self.seed, index))
            eps = torch.randn(x0.shape[1:], generator=item).to(self.device)[None]
            packed.append(
                pack_condition(self.noise.apply(x0[row : row + 1], level, eps), condition)
            )
        return torch.cat(packed), labels


def _item_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, 11, index]).generate_state(1, np.uint64)[0]) >> 1


def _train(
    build: Callable[[], nn.Module],
    data: NoisyImageData,
    config: ClassifierTrainingConfig,
    device: torch.device,
    identity: Mapping[str, Any],
    progress: bool,
    metrics: str | Path | None,
    state_dir: str | Path | None,
) -> nn.Module:
    """Train a noise-conditional classifier with `ClassifierTrainer` (one process); the trained
    network in eval mode. With ``state_dir`` an interrupted run resumes from its partial state."""
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
    return trainer.network.eval()


# --- the DDAE head -----------------------------------------------------------------------------


class NoisyHeadClassifier(nn.Module):
    """Eq. 5 as one model: frozen DDAE features of the noisy image at its level t, then the
    trainable `NoisyHead`. The frozen network is held outside the module's parameters, state
    and memory-format changes: the trainer trains, saves and resumes the head alone."""

    def __init__(
        self,
        features: DecoderFeatures,
        framework: Framework,
        sigmas: Tensor,
        dim: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        self.head = NoisyHead(dim, num_classes)
        self._frozen = (features, framework, sigmas)  # a tuple: not registered as submodules

    def forward(self, inputs: Tensor) -> Tensor:
        x, condition = unpack_condition(inputs)  # x = x0 + σ_t ε, condition t
        t = condition.round().long()
        features, framework, sigmas = self._frozen
        with torch.no_grad():
            (pooled,) = features(*framework.network_inputs(x, sigmas[t - 1]))
        with torch.autocast(x.device.type, enabled=False):  # the head in fp32, as the official
            return self.head(pooled.float(), t)


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

        def build() -> nn.Module:
            return NoisyHeadClassifier(features, framework, sigmas, dim, len(train.classes))

        model = _train(build, data, training, device, identity, progress, metrics, state_dir)
        return _test_and_write(
            _level_logits(model, noise, device, cfg.bf16),
            data,
            [float(sigmas[t_level - 1]) for t_level in levels],
            steps,
            cfg.eval_batch_size,
            out_csv,
            state_dir,
        )


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
    rows = _accuracy_per_level(
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
    if state_dir is not None:
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


def _accuracy_per_level(
    logits_for: Callable[[Tensor, int, Tensor], Tensor],
    test_images: Tensor,
    test_labels: Tensor,
    levels: Sequence[int],
    sigmas: Sequence[float],
    steps: int,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> list[dict[str, Any]]:
    """Test accuracy at every noise level: ``logits_for(x0, t, ε)`` on the test images in
    batches, with ε seeded per (seed, level); rows ``t, steps, sigma, test_accuracy``."""
    rows = []
    for t_level, sigma in zip(levels, sigmas, strict=True):
        level_generator = _level_generator(device, seed, t_level)
        hits = 0
        for chunk in torch.arange(len(test_images), device=device).split(batch_size):
            x0 = to_model_range(test_images[chunk])
            eps = torch.randn(x0.shape, generator=level_generator, device=device)
            with torch.no_grad():
                logits = logits_for(x0, t_level, eps)
            hits += int((logits.argmax(dim=1) == test_labels[chunk]).sum())
        accuracy = 100.0 * hits / len(test_images)
        log.info("t=%d/%d sigma=%.4g: test accuracy %.2f", t_level, steps, sigma, accuracy)
        rows.append({"t": t_level, "steps": steps, "sigma": sigma, "test_accuracy": accuracy})
    return rows


# --- the noise-conditional WideResNet baseline -------------------------------------------------


class Perturbation:
    """How the WRN baseline's training and test images are noised (official WRN script).

    ``vp`` (DDPM framework): x = √ᾱ_t x0 + √(1−ᾱ_t) ε, condition t/T, t ~ U{1..T}.
    ``ve`` (EDM framework): x = x0 + σ ε, condition ln σ, ln σ ~ N(P_mean, P_std²).
    Test level t has the σ of ``framework.sigma_at_timestep(t, steps)`` in both cases.
    """

    def __init__(self, kind: Literal["vp", "ve"], framework: Framework, steps: int) -> None:
        if kind == "vp" and not isinstance(framework, DDPM):
            raise ConfigError("perturbation 'vp' needs a DDPM framework (kind: ddpm)")
        if kind == "ve" and not isinstance(framework, EDM):
            raise ConfigError("perturbation 've' needs an EDM framework (kind: edm)")
        if kind not in ("vp", "ve"):
            raise ConfigError(f"perturbation must be 'vp' or 've', got {kind!r}")
        self.kind, self.framework, self.steps = kind, framework, steps

    def train_draw(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(level, condition) per image for training: DDPM step indices or EDM σ."""
        device = generator.device
        if isinstance(self.framework, DDPM):
            T = self.framework.config.timesteps
            t = torch.randint(1, T + 1, (batch,), generator=generator, device=device)
            return t, t.float() / T
        sigma = self.framework.sample_training_sigma(batch, generator)
        return sigma, sigma.log().float()

    def test_level(self, t: int, batch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        if isinstance(self.framework, DDPM):
            level = torch.full((batch,), t, dtype=torch.long, device=device)
            return level, level.float() / self.framework.config.timesteps
        sigma = self.framework.sigma_at_timestep(t, self.steps)
        level = torch.full((batch,), sigma, dtype=torch.float64, device=device)
        return level, level.log().float()

    def apply(self, x0: Tensor, level: Tensor, eps: Tensor) -> Tensor:
        if isinstance(self.framework, DDPM):
            alpha_bar = self.framework.alphas_cumprod.to(x0.device)[level - 1]
            a = _per_sample(alpha_bar, x0)
            return a.sqrt() * x0 + (1.0 - a).sqrt() * eps  # Eq. 1
        return x0 + _per_sample(level, x0) * eps


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
    model = _train(
        lambda: NoisyWRNClassifier(network),
        data,
        cfg,
        device,
        identity,
        progress,
        metrics,
        state_dir,
    )
    sigmas = [diffusion.sigma_at_timestep(t_level, steps) for t_level in levels]
    logits = _level_logits(model, noise, device, cfg.bf16, cfg.channels_last)
    return _test_and_write(logits, data, sigmas, steps, 500, out_csv, state_dir)


class NoisyWRNClassifier(nn.Module):
    """The noise-conditional WideResNet (`ddae.networks.noisy_wide_resnet`) on a packed
    noisy image + condition input (`pack_condition`)."""

    def __init__(self, network: Mapping[str, Any]) -> None:
        super().__init__()
        self.wrn = build_network(network, "network")

    def forward(self, inputs: Tensor) -> Tensor:
        return self.wrn(*unpack_condition(inputs))
