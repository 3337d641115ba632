"""The noise levels of the noise-conditional classifiers (paper Sec. 4.1.3, Figure 6): how their
training and test images are noised at a level, handed to the model with the level's condition,
and tested level by level. The official code draws them in ``noisy_classifier_DDAE.py`` (the
DDAE head: x = x0 + σ_t ε, condition t) and ``noisy_classifier_WRN.py`` (the WideResNet
baseline: VP √ᾱ_t x0 + √(1−ᾱ_t) ε, condition t/T; VE x0 + σ ε, condition ln σ); Figure 6's test
levels are DDPM t ∈ arange(0, T, T // 20) + 1 = {1, 51, …, 951} and EDM every t in 1..18. Not in
the paper, `level_statistics` standardises the head's features per level
(`NoisyHeadConfig.standardize`). The classifiers and their training are
`ddae.noise_conditional`'s."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ddae.batching import to_model_range
from ddae.configs import ConfigError
from ddae.diffusion import DDPM, EDM, Framework
from ddae.probing.bank import standardizer
from ddae.sources import ClassifierData, ImageData

log = logging.getLogger(__name__)


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


TEST_NOISE, STATISTICS_NOISE = 7, 13  # the streams of ε seeded per level (`level_generator`)


def level_generator(
    device: torch.device, seed: int, t: int, stream: int = TEST_NOISE
) -> torch.Generator:
    """The generator of level t's ε in ``stream`` (test images, or the head's statistics)."""
    mixed = int(np.random.SeedSequence([seed, stream, t]).generate_state(1, np.uint64)[0])
    return torch.Generator(device).manual_seed(mixed >> 1)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


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


class NoisyImageData(ClassifierData):
    """`ImageData` turned into noisy model inputs: the noisy image plus its condition
    (`pack_condition`).

    Per global batch, from the trainer's generator and in the order of the old loops: flip and
    crop (``clean``), the level of every image (``noise.train_draw``), then ε. The trainer's own
    test (after the last epoch, its metrics line) sees test image i at level
    ``levels[i % len(levels)]`` with ε seeded per image, so it is the same for any process count;
    Figure 6's per-level accuracies are `accuracy_per_level`'s.
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


def accuracy_per_level(
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
        generator = level_generator(device, seed, t_level)
        hits = 0
        for chunk in torch.arange(len(test_images), device=device).split(batch_size):
            x0 = to_model_range(test_images[chunk])
            eps = torch.randn(x0.shape, generator=generator, device=device)
            with torch.no_grad():
                logits = logits_for(x0, t_level, eps)
            hits += int((logits.argmax(dim=1) == test_labels[chunk]).sum())
        accuracy = 100.0 * hits / len(test_images)
        log.info("t=%d/%d sigma=%.4g: test accuracy %.2f", t_level, steps, sigma, accuracy)
        rows.append({"t": t_level, "steps": steps, "sigma": sigma, "test_accuracy": accuracy})
    return rows


@torch.no_grad()
def level_statistics(
    pooled: Callable[[Tensor, Tensor], Tensor],
    noise: LevelNoise,
    images: Tensor,
    stats_levels: Sequence[int],
    seed: int,
    batch_size: int,
) -> tuple[Tensor, Tensor]:
    """Per-level standardisation of the DDAE head's features (`NoisyHeadConfig.standardize`,
    not in the paper): (steps, d) mean and 1/√(var + 1e-5) of ``pooled(x, t)``, the frozen
    features of ``images`` (clean, uint8) noised at level t as in training (``noise``; ε seeded
    per (seed, level) in its own stream), at each level of ``stats_levels``; every t in
    1..steps takes the statistics of the nearest such level (ties: the lower)."""
    means, scales = [], []
    for level in stats_levels:
        generator = level_generator(images.device, seed, level, STATISTICS_NOISE)
        rows = []
        for chunk in images.split(batch_size):
            x0 = to_model_range(chunk)
            t, _ = noise.test_level(level, len(x0), x0.device)
            eps = torch.randn(x0.shape, generator=generator, device=x0.device)
            rows.append(pooled(noise.apply(x0, t, eps), t))
        mean, scale = standardizer(torch.cat(rows))
        means.append(mean)
        scales.append(scale)
    levels = torch.tensor(list(stats_levels), device=images.device)
    steps = torch.arange(1, noise.steps + 1, device=images.device)
    nearest = (steps[:, None] - levels[None, :]).abs().argmin(dim=1)
    return torch.stack(means)[nearest], torch.stack(scales)[nearest]
