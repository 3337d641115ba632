"""Diffusion frameworks around one denoiser contract D(x, σ) ≈ x0 (paper Sec. 3.1).

σ is the single currency (Karras et al. 2022, "EDM"): every framework works on the
variance-exploding view x = x0 + σ·ε and supplies the preconditioning that turns a plain network
F(input, noise_labels, augment_labels) into D. Any network therefore trains under any framework
(the paper's Figure 3 trains DDPM++ under DDPM and under EDM), and one sampler or feature
extractor serves every model.

* `DDPM` (Ho et al. 2020): variance preserving, ε-prediction, linear β from β_min to β_max over T
  steps. With ᾱ_t = Π_{i≤t}(1 − β_i) (paper Sec. 3.1, α_t² = ᾱ_t), x_t = √ᾱ_t x0 + √(1−ᾱ_t) ε
  (Eq. 1) is √ᾱ_t·(x0 + σ_t ε) with σ_t = √((1 − ᾱ_t)/ᾱ_t), so D(x, σ) = x − σ·F(x/√(1+σ²), t−1):
  c_skip = 1, c_out = −σ, c_in = 1/√(1+σ²) = √ᾱ_t and the network receives the 0-based step.
  Its ε-loss ‖F − ε‖² is Eq. 2 weighted by 1/σ². The authors' DDIM samples on another ᾱ table
  with the same steps (`DDPM.sampling_table`).
* `EDM` (Karras et al. 2022): ln σ ~ N(P_mean, P_std²), preconditioning c_skip, c_out, c_in,
  c_noise = ln(σ)/4 and loss weight (σ² + σ_d²)/(σ σ_d)² (EDM Table 1).

Timesteps follow the paper's Table 9 notation "t/steps": DDPM's t is 1-based (t = 11 → ᾱ index
10), EDM's t indexes the reversed Heun schedule of `steps` levels (t = 1 → σ_min,
t = steps → σ_max).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import torch
from torch import Tensor, nn

from ddae.configs import ConfigError
from ddae.settings.frameworks import DDPMConfig, EDMConfig, framework_config

Denoiser = Callable[[Tensor, Tensor], Tensor]  # D(x, σ): (B,C,H,W), (B,) → (B,C,H,W)
DDPMTable = Literal["training", "authors_ddim"]  # which ᾱ levels a DDPM uses (DDPM.__init__)


def _per_sample(values: Tensor, like: Tensor) -> Tensor:
    """Reshape a (B,) tensor to broadcast against (B, C, H, W)."""
    return values.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """EDM Eq. 5: σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ, i = 0..N−1 (float64).

    Descending, from σ_max to σ_min, without the final 0.
    """
    if steps < 2:
        raise ConfigError(f"steps: the Heun schedule needs at least 2 levels, got {steps}")
    ramp = torch.arange(steps, dtype=torch.float64) / (steps - 1)
    inv_rho = 1.0 / rho
    return (sigma_max**inv_rho + ramp * (sigma_min**inv_rho - sigma_max**inv_rho)) ** rho


class DDPM:
    """Variance-preserving DDPM with ε-prediction and a linear β schedule (Ho et al. 2020)."""

    Config = DDPMConfig  # its config keys (`ddae.settings.frameworks`, torch-free)

    def __init__(self, config: Config, table: DDPMTable = "training") -> None:
        """`table` chooses the ᾱ levels: "training" (Ho et al.; what the network is trained on)
        or "authors_ddim", the table the authors' DDIM samples on (`sampling_table`)."""
        self.config = config
        self.table = table
        T, beta_min, beta_max = config.timesteps, config.beta_min, config.beta_max
        if table == "training":
            betas = torch.linspace(beta_min, beta_max, T, dtype=torch.float64)
            self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # ᾱ at 0-based index t − 1
            self.final_alpha_bar = 1.0  # sampling ends at σ = 0
        elif table == "authors_ddim":
            # FutureXiang/ddae model/DDPM.py, schedules(betas, T, 'DDIM'): T + 1 betas with no
            # leading 0, ᾱ_ddim[0..T]; the network's 1-based step t reads ᾱ_ddim[t].
            betas = torch.linspace(beta_min, beta_max, T + 1, dtype=torch.float64)
            alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
            self.alphas_cumprod = alphas_cumprod[1:]  # ᾱ_ddim[t] at 0-based index t − 1
            self.final_alpha_bar = float(alphas_cumprod[0])  # ddim_sample's last level: 1 − β_1
        else:
            raise ConfigError(f"DDPM table must be 'training' or 'authors_ddim', got {table!r}")
        self.sigmas = ((1.0 - self.alphas_cumprod) / self.alphas_cumprod).sqrt()  # ascending
        self._device_tables: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._other_tables: dict[str, DDPM] = {}  # sampling_table's, built once each

    def sampling_table(self, table: DDPMTable) -> DDPM:
        """This DDPM on another ᾱ table, for sampling only (`ddae.sampling`).

        "authors_ddim" is what the authors' ``ddim_sample`` computes with (FutureXiang/ddae
        ``model/DDPM.py``, ``self.ddim_sche = schedules(betas, n_T, device, 'DDIM')``): at its
        1-based level t the network receives its training step t (``t / n_T``), but x_t is read
        as √ᾱ_ddim[t]·x0 + √(1 − ᾱ_ddim[t])·ε, about one step noisier than the training table
        (σ +0.5 % at most levels, +7 % at t = 11, +48 % at t = 1), and the last update goes to
        ᾱ_ddim[0] = 1 − β_1 (σ = √(β_1/(1 − β_1)) ≈ 0.01 for β_1 = 1e-4), not to σ = 0. Here
        index t − 1 of this table holds ᾱ_ddim[t], so `denoise` gives the network the same step
        and input scale √ᾱ_ddim[t] as theirs. (Their table is float32 exp(cumsum(log α));
        ours is a float64 cumprod: the same to about 1e-7.)
        """
        if table == self.table:
            return self
        if table not in self._other_tables:  # FID asks once per batch: build (and copy) once
            self._other_tables[table] = DDPM(self.config, table)
        return self._other_tables[table]

    def tables(self, device: torch.device | str) -> tuple[Tensor, Tensor]:
        """(ᾱ, σ) tables (float64) on `device`, copied there once and kept.

        A training or sampling step then indexes device buffers: copying the CPU tables on
        every call was a blocking host-to-device transfer (a host synchronisation) per step.
        """
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in self._device_tables:
            self._device_tables[device] = (
                self.alphas_cumprod.to(device),
                self.sigmas.to(device),
            )
        return self._device_tables[device]

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_at_timestep(self, t: int, steps: int) -> float:
        """σ of the 1-based timestep t ("t/steps" with steps = T, paper Table 9)."""
        if steps != self.config.timesteps:
            raise ConfigError(f"DDPM timesteps are out of T={self.config.timesteps}, got /{steps}")
        if not 1 <= t <= steps:
            raise ConfigError(f"timestep {t} is outside 1..{steps}")
        return float(self.sigmas[t - 1])

    def step_index(self, sigma: Tensor) -> Tensor:
        """0-based step whose σ is nearest to `sigma` in log space (exact for table values)."""
        log_table = self.tables(sigma.device)[1].log()
        distance = (sigma.double().log().reshape(-1, 1) - log_table.reshape(1, -1)).abs()
        return distance.argmin(dim=1)

    def prior_std(self, sigma_max: float) -> float:
        """x_T ~ N(0, I) in VP coordinates is N(0, (1 + σ_T²) I) in x = x_t/√ᾱ_T coordinates."""
        return math.sqrt(1.0 + sigma_max**2)

    def sampling_levels(self, steps: int) -> Tensor:
        """0-based indices of the levels a `steps`-step DDIM visits, ascending.

        As the authors' sampler (FutureXiang/ddae ``model/DDPM.py``, ``ddim_sample``):
        ``times = arange(0, T, T // steps) + 1`` in 1-based steps, i.e. every (T // steps)-th
        level starting at the first. Its count is ⌈T / (T // steps)⌉, not always `steps`: 100
        for T = 1000, 103 for T = 512, 128 for T = 256. With steps ≥ T (T // steps would be 0,
        which the authors' code cannot take) every one of the T levels is used (Figure 4's
        T = 64 with 100 DDIM steps).
        """
        T = self.config.timesteps
        if steps < 1:
            raise ConfigError(f"sampling steps must be positive, got {steps}")
        return torch.arange(0, T, max(T // steps, 1))

    def sampling_sigmas(self, steps: int) -> Tensor:
        """σ of `sampling_levels(steps)`, descending, then the final level: σ = 0 on the
        training table, σ(ᾱ_ddim[0]) ≈ 0.01 on the authors' DDIM table (`sampling_table`)."""
        indices = self.sampling_levels(steps)
        final = math.sqrt((1.0 - self.final_alpha_bar) / self.final_alpha_bar)
        return torch.cat([self.sigmas[indices.flip(0)], torch.tensor([final], dtype=torch.float64)])

    def final_image(self, x: Tensor) -> Tensor:
        """A sampler's last state x = x0 + σ ε as the image: x_t = √ᾱ·x in VP coordinates, what
        the authors' ``ddim_sample`` returns (≈ 0.99995 x0 + 0.01 ε on their DDIM table); x
        itself on the training table, where sampling ends at σ = 0 (ᾱ = 1)."""
        return x * math.sqrt(self.final_alpha_bar)

    def _training_table_only(self) -> None:
        if self.table != "training":
            raise ValueError(f"the {self.table!r} table is for sampling; train on 'training'")

    def sample_training_sigma(self, batch: int, generator: torch.Generator) -> Tensor:
        """σ_t for t ~ U{1..T} (Ho et al. Algorithm 1): (batch,) float64 on the generator device."""
        self._training_table_only()
        index = torch.randint(
            0, self.config.timesteps, (batch,), generator=generator, device=generator.device
        )
        return self.tables(generator.device)[1][index]

    def network_inputs(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """The network's input √ᾱ·x and noise label t − 1 (0-based step) for x = x0 + σ ε.

        Everything that reads the network's activations (features, truncated encoders) enters
        through here, so they see exactly what D sees.
        """
        sigma = sigma.reshape(-1).expand(x.shape[0])
        index = self.step_index(sigma)
        c_in = _per_sample(self.tables(x.device)[0][index].sqrt(), x)
        return c_in * x, index.to(torch.float32)

    def denoise(
        self, net: nn.Module, x: Tensor, sigma: Tensor, augment_labels: Tensor | None = None
    ) -> Tensor:
        """D(x, σ) = x − σ·ε_θ(√ᾱ·x, t − 1) for x = x0 + σ ε (see module docstring)."""
        sigma = sigma.reshape(-1).expand(x.shape[0])
        eps = net(*self.network_inputs(x, sigma), augment_labels).to(x.dtype)
        return x - _per_sample(sigma, x) * eps

    def training_loss(
        self,
        net: nn.Module,
        x0: Tensor,
        sigma: Tensor,
        noise: Tensor,
        augment_labels: Tensor | None = None,
    ) -> Tensor:
        """Per-example ‖ε_θ(x_t, t) − ε‖² averaged over pixels (Ho et al. Eq. 14), shape (B,).

        Computed in the network's own ε parameterisation (x_t built from ᾱ exactly as DDPM does)
        rather than through D, which would lose precision at small σ.
        """
        self._training_table_only()
        index = self.step_index(sigma)
        alpha_bar = _per_sample(self.tables(x0.device)[0][index], x0)
        x_t = alpha_bar.sqrt() * x0 + (1.0 - alpha_bar).sqrt() * noise  # Eq. 1
        eps = net(x_t, index.to(torch.float32), augment_labels)
        return (eps.float() - noise.float()).square().flatten(1).mean(dim=1)


class EDM:
    """EDM training and preconditioning (Karras et al. 2022, Table 1, VE view)."""

    Config = EDMConfig  # its config keys (`ddae.settings.frameworks`, torch-free)

    def __init__(self, config: Config) -> None:
        self.config = config

    @property
    def sigma_min(self) -> float:
        return self.config.sigma_min

    @property
    def sigma_max(self) -> float:
        return self.config.sigma_max

    def sigma_at_timestep(self, t: int, steps: int) -> float:
        """σ of t in 1..steps on the reversed Heun schedule: t = 1 → σ_min, t = steps → σ_max."""
        if not 1 <= t <= steps:
            raise ConfigError(f"timestep {t} is outside 1..{steps}")
        c = self.config
        return float(karras_sigmas(steps, c.sigma_min, c.sigma_max, c.rho)[steps - t])

    def prior_std(self, sigma_max: float) -> float:
        return sigma_max

    def final_image(self, x: Tensor) -> Tensor:
        """A sampler's last state as the image: EDM's samplers end at σ = 0, so x itself."""
        return x

    def sampling_sigmas(self, steps: int) -> Tensor:
        c = self.config
        return torch.cat(
            [
                karras_sigmas(steps, c.sigma_min, c.sigma_max, c.rho),
                torch.zeros(1, dtype=torch.float64),
            ]
        )

    def sample_training_sigma(self, batch: int, generator: torch.Generator) -> Tensor:
        """ln σ ~ N(P_mean, P_std²), shape (batch,) float64 on the generator's device."""
        normal = torch.randn(
            batch, generator=generator, device=generator.device, dtype=torch.float64
        )
        return (normal * self.config.p_std + self.config.p_mean).exp()

    def preconditioning(self, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """c_skip, c_out, c_in, c_noise of EDM Table 1 for σ of shape (B,)."""
        sd = self.config.sigma_data
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        c_in = 1.0 / (sigma**2 + sd**2).sqrt()
        c_noise = sigma.log() / 4.0
        return c_skip, c_out, c_in, c_noise

    def network_inputs(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """The network's input c_in·x and noise label c_noise = ln(σ)/4 (EDM Table 1)."""
        sigma = sigma.reshape(-1).expand(x.shape[0]).to(torch.float32)
        _, _, c_in, c_noise = self.preconditioning(sigma)
        return _per_sample(c_in, x) * x, c_noise

    def denoise(
        self, net: nn.Module, x: Tensor, sigma: Tensor, augment_labels: Tensor | None = None
    ) -> Tensor:
        """D(x, σ) = c_skip x + c_out F(c_in x, c_noise, augment_labels) (EDM Eq. 7)."""
        sigma = sigma.reshape(-1).expand(x.shape[0]).to(torch.float32)
        c_skip, c_out, _, _ = self.preconditioning(sigma)
        out = net(*self.network_inputs(x, sigma), augment_labels).to(x.dtype)
        return _per_sample(c_skip, x) * x + _per_sample(c_out, x) * out

    def training_loss(
        self,
        net: nn.Module,
        x0: Tensor,
        sigma: Tensor,
        noise: Tensor,
        augment_labels: Tensor | None = None,
    ) -> Tensor:
        """Per-example λ(σ)‖D(x0 + σε, σ) − x0‖² averaged over pixels (EDM Eq. 8), shape (B,).

        Averaged like the official DDAE code (``loss.mean()``); EDM's own code sums over pixels,
        which only rescales the gradient.
        """
        sd = self.config.sigma_data
        weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
        sigma32 = sigma.to(torch.float32)
        denoised = self.denoise(net, x0 + _per_sample(sigma32, x0) * noise, sigma32, augment_labels)
        error = (denoised.float() - x0.float()).square().flatten(1).mean(dim=1)
        return weight.to(error.dtype) * error


Framework = DDPM | EDM

# kind -> framework; its config: `ddae.settings.frameworks.FRAMEWORK_CONFIGS` (the same kinds)
FRAMEWORKS: dict[str, type[DDPM] | type[EDM]] = {"ddpm": DDPM, "edm": EDM}


def build_framework(spec: Mapping[str, Any], where: str = "framework") -> Framework:
    config = framework_config(spec, where)
    return FRAMEWORKS[spec["kind"]](config)
