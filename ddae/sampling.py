"""Samplers with one signature, in the σ currency (paper Sec. 4.1: FID of 50k samples).

Every sampler is ``sampler(denoiser, x, sigmas, noise) -> x`` where ``denoiser`` is D(x, σ),
``x`` the initial latent already scaled to the prior (`Framework.prior_std`), ``sigmas`` a
descending schedule ending in 0 (≈ 0.01 on the authors' DDIM table, below) and ``noise`` a
per-image noise source (ancestral steps only); it returns the state at the last σ, which
`Framework.final_image` turns into the image:

* `heun`: EDM Algorithm 1, deterministic (S_churn = 0): N levels cost 2N − 1 evaluations
  (18 → 35 on CIFAR-10).
* `ddim`: DDIM with η = 0 (Song et al. 2021), which in x = x_t/√ᾱ coordinates is exactly Euler
  on the probability-flow ODE: x' = x + (σ' − σ)(x − D)/σ.
* `ddpm_ancestral`: DDPM's ancestral step with the posterior variance β̃ (Ho et al. Eq. 6–7,
  google/ddpm-cifar10-32's "fixed_small"), written for any pair of levels via ᾱ = 1/(1 + σ²).

DDIM's ᾱ table on a DDPM (`ddim_table`): "authors" (the default) samples as the authors'
``ddim_sample`` did for every DDPM FID of the paper (FutureXiang/ddae ``model/DDPM.py``): the
levels of their separate T + 1-β table and a last update to ᾱ = 1 − β_1, σ ≈ 0.01, returned in
VP coordinates (`ddae.diffusion.DDPM.sampling_table`). "training" samples the network's training
table down to σ = 0, as DDIM is usually written (our variant before matching theirs).

x0 clipping: the authors' samplers clamp the predicted x0 to [−1, 1] before every step
(FutureXiang/ddae ``pred_eps_(..., clip_x=True)`` in ``model/DDPM.py`` and ``model/EDM.py``), so
the models they trained were scored that way; EDM's own generate.py (NVlabs/edm, the source of
the official checkpoint's FID) does not clip. `generate(clip_denoised=...)` wraps D(x, σ) in that
clamp for any sampler; the FID setting `SamplingConfig.clip_denoised` chooses it per run.

`generate` draws a batch-size independent, per-image seeded set of samples (like EDM's
generate.py), so the same seed gives the same images at any batch size or device count.

Fast path (not in the paper; `ddae.fast_path`): on CUDA `generate` by default evaluates the
network under bf16 autocast, with TF32 matrix products and channels_last activations; the
sampler state stays float64. On any other device it runs in float32 exactly as before.
tests/test_sampling.py bounds the bf16 + channels_last path against float32 on CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ddae.configs import ConfigError
from ddae.diffusion import DDPM, DDPMTable, Denoiser, Framework
from ddae.fast_path import FastPath


class PerImageNoise:
    """Independent normal draws per image, each image with its own seeded generator."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str) -> None:
        self.generators = [torch.Generator(device).manual_seed(int(s)) for s in seeds]
        self.device = torch.device(device)

    def randn(self, shape: Sequence[int], dtype: torch.dtype = torch.float64) -> Tensor:
        """(len(seeds), *shape) normal samples."""
        return torch.stack(
            [
                torch.randn(tuple(shape), generator=g, device=self.device, dtype=dtype)
                for g in self.generators
            ]
        )


def _sigma_batch(sigma: Tensor, x: Tensor) -> Tensor:
    return sigma.to(x.device, x.dtype).expand(x.shape[0])


@torch.no_grad()
def heun(
    denoiser: Denoiser, x: Tensor, sigmas: Tensor, noise: PerImageNoise | None = None
) -> Tensor:
    """EDM's deterministic 2nd-order sampler (Karras et al. 2022, Algorithm 1, S_churn = 0)."""
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        d = (x - denoiser(x, _sigma_batch(sigma, x))) / sigma  # dx/dσ at σ
        x_euler = x + (sigma_next - sigma) * d
        if sigma_next > 0:  # 2nd-order correction (skipped at the last step)
            d_next = (x_euler - denoiser(x_euler, _sigma_batch(sigma_next, x))) / sigma_next
            x = x + (sigma_next - sigma) * (0.5 * d + 0.5 * d_next)
        else:
            x = x_euler
    return x


@torch.no_grad()
def ddim(
    denoiser: Denoiser, x: Tensor, sigmas: Tensor, noise: PerImageNoise | None = None
) -> Tensor:
    """DDIM, η = 0: x' = D + σ'·(x − D)/σ (Song et al. 2021 Eq. 12 in x_t/√ᾱ coordinates)."""
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        denoised = denoiser(x, _sigma_batch(sigma, x))
        x = denoised + (sigma_next / sigma) * (x - denoised)
    return x


@torch.no_grad()
def ddpm_ancestral(
    denoiser: Denoiser, x: Tensor, sigmas: Tensor, noise: PerImageNoise | None = None
) -> Tensor:
    """DDPM ancestral sampling: x_{t−1} ~ q(x_{t−1} | x_t, x0 = D) (Ho et al. Eq. 6–7)."""
    if noise is None:
        raise ValueError("ddpm_ancestral needs a noise source")
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        denoised = denoiser(x, _sigma_batch(sigma, x))
        alpha_bar = 1.0 / (1.0 + sigma**2)  # ᾱ_t
        alpha_bar_prev = 1.0 / (1.0 + sigma_next**2)  # ᾱ_{t−1} (= 1 at σ' = 0)
        beta = 1.0 - alpha_bar / alpha_bar_prev  # β_t
        x_t = x * alpha_bar.sqrt()  # back to VP coordinates
        mean = (
            alpha_bar_prev.sqrt() * beta * denoised + (1 - beta).sqrt() * (1 - alpha_bar_prev) * x_t
        ) / (1 - alpha_bar)
        variance = beta * (1 - alpha_bar_prev) / (1 - alpha_bar)  # β̃_t
        x_prev = mean + variance.sqrt() * noise.randn(x.shape[1:], x.dtype)
        x = x_prev / alpha_bar_prev.sqrt()
    return x


Sampler = Callable[[Denoiser, Tensor, Tensor, PerImageNoise | None], Tensor]

SAMPLERS: dict[str, Sampler] = {"heun": heun, "ddim": ddim, "ddpm_ancestral": ddpm_ancestral}

DEFAULT_STEPS = {"heun": 18, "ddim": 100, "ddpm_ancestral": None}  # None: every level (T)


# DDIM on a DDPM: which ᾱ table (module docstring) -> DDPM.sampling_table's name for it
DDIM_TABLES: dict[str, DDPMTable] = {"authors": "authors_ddim", "training": "training"}
# The paper's DDPM FIDs come from FutureXiang/ddae model/DDPM.py ddim_sample (sample.py's default
# mode), which samples on schedules(betas, n_T, device, 'DDIM').
DEFAULT_DDIM_TABLE = "authors"


def ddim_table_of(framework: Framework, sampler: str, ddim_table: str | None) -> str | None:
    """The DDIM table a run samples on: `ddim_table` or `DEFAULT_DDIM_TABLE` for the ddim sampler
    on a DDPM, None for every other sampler or framework (where setting it is an error)."""
    if ddim_table is not None and ddim_table not in DDIM_TABLES:
        raise ConfigError(f"ddim_table: must be one of {sorted(DDIM_TABLES)}, got {ddim_table!r}")
    if sampler == "ddim" and isinstance(framework, DDPM):
        return ddim_table or DEFAULT_DDIM_TABLE
    if ddim_table is not None:
        raise ConfigError(
            f"ddim_table: {ddim_table!r} applies to the ddim sampler on a DDPM framework only, "
            f"not to sampler {sampler!r} on {type(framework).__name__}"
        )
    return None


def sampling_framework(framework: Framework, sampler: str, ddim_table: str | None) -> Framework:
    """The framework `sampler` samples with: a DDPM's DDIM on its `ddim_table_of` table."""
    table = ddim_table_of(framework, sampler, ddim_table)
    if table is None:
        return framework
    assert isinstance(framework, DDPM)
    return framework.sampling_table(DDIM_TABLES[table])


def sampling_schedule(
    framework: Framework, sampler: str, steps: int | None, ddim_table: str | None = None
) -> Tensor:
    """Descending σ schedule for `sampler` (float64, CPU), ending in 0 except on the authors'
    DDIM table (`ddim_table`: module docstring)."""
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler: unknown sampler {sampler!r} (choose from {sorted(SAMPLERS)})")
    if steps is None:
        steps = DEFAULT_STEPS[sampler] or getattr(framework.config, "timesteps", 1000)
    return sampling_framework(framework, sampler, ddim_table).sampling_sigmas(steps)


def _float_denoiser(
    framework: Framework, net: nn.Module, fast: FastPath, clip: bool = False
) -> Denoiser:
    """D evaluated in float32 (or on the fast path, `ddae.fast_path`) for a float64 sampler
    state; `clip` clamps it to the data range [−1, 1] (the authors' ``clip_x=True``)."""

    def denoiser(x: Tensor, sigma: Tensor) -> Tensor:
        with fast.running(x.device.type):
            x_in = fast.activations(x.float())
            denoised = framework.denoise(net, x_in, sigma.float()).to(x.dtype)
        return denoised.clamp(-1.0, 1.0) if clip else denoised

    return denoiser


@torch.no_grad()
def generate(
    framework: Framework,
    net: nn.Module,
    image_shape: Sequence[int],
    seeds: Sequence[int],
    *,
    sampler: str = "heun",
    steps: int | None = None,
    device: torch.device | str = "cpu",
    bf16: bool = True,
    tf32: bool = True,
    channels_last: bool = True,
    clip_denoised: bool = False,
    ddim_table: str | None = None,
) -> Tensor:
    """Sample one image per seed; returns float images (len(seeds), C, H, W) clipped to [−1, 1].

    `clip_denoised` clamps every step's x0 prediction to [−1, 1]; `ddim_table` chooses DDIM's
    ᾱ table on a DDPM (None: the authors'); see the module docstring for both.
    `bf16`, `tf32` and `channels_last` are the CUDA fast path (module docstring); elsewhere
    they are ignored and the network runs in float32.
    """
    fast = FastPath.for_device(device, bf16=bf16, tf32=tf32, channels_last=channels_last)
    return sample_images(
        framework,
        net,
        image_shape,
        seeds,
        sampler=sampler,
        steps=steps,
        device=device,
        fast=fast,
        clip_denoised=clip_denoised,
        ddim_table=ddim_table,
    )


@torch.no_grad()
def sample_images(
    framework: Framework,
    net: nn.Module,
    image_shape: Sequence[int],
    seeds: Sequence[int],
    *,
    sampler: str,
    steps: int | None,
    device: torch.device | str,
    fast: FastPath,
    clip_denoised: bool,
    ddim_table: str | None = None,
) -> Tensor:
    """`generate` with the fast-path switches applied as given on any device (tests use it on
    CPU). channels_last converts `net` in place (its weights' layout, not their values).
    """
    device = torch.device(device)
    fast.prepare(net)
    framework = sampling_framework(framework, sampler, ddim_table)
    sigmas = sampling_schedule(framework, sampler, steps, ddim_table).to(device)
    state_dtype = torch.float32 if device.type == "mps" else torch.float64
    sigmas = sigmas.to(state_dtype)
    noise = PerImageNoise(seeds, device)
    x = noise.randn(image_shape, state_dtype) * framework.prior_std(float(sigmas[0]))
    denoiser = _float_denoiser(framework, net, fast, clip=clip_denoised)
    images = framework.final_image(SAMPLERS[sampler](denoiser, x, sigmas, noise))
    return images.float().clamp(-1.0, 1.0).contiguous()
