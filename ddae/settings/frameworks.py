"""The diffusion frameworks' config keys (paper Sec. 3.1, Figure 4's schedule ablations),
importing no torch.

`DDPMConfig` and `EDMConfig` are the ``Config`` of `ddae.diffusion.DDPM` and `ddae.diffusion.EDM`;
`framework_config` validates a ``{"kind": "ddpm" | "edm", ...}`` spec, as the Snakefile does
for every framework of config.yaml while it plans.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ddae.configs import tagged_config


@dataclass(frozen=True)
class DDPMConfig:
    """Variance-preserving DDPM with a linear β schedule (Ho et al. 2020)."""

    timesteps: int = 1000  # T; Figure 4 ablates 1000, 512, 256, 64
    beta_min: float = 1e-4  # β_1; Figure 4 "upper half" uses 0.01
    beta_max: float = 0.02  # β_T; Figure 4 "lower half" uses 0.01

    def __post_init__(self) -> None:
        if self.timesteps < 2:
            raise ValueError(f"timesteps must be at least 2, got {self.timesteps}")
        if not 0 < self.beta_min < self.beta_max < 1:
            raise ValueError(
                f"need 0 < beta_min < beta_max < 1, got {self.beta_min}, {self.beta_max}"
            )


@dataclass(frozen=True)
class EDMConfig:
    """EDM training and preconditioning (Karras et al. 2022, Table 1)."""

    sigma_data: float = 0.5  # σ_d
    p_mean: float = -1.2  # ln σ ~ N(P_mean, P_std²) during training
    p_std: float = 1.2
    sigma_min: float = 0.002  # sampling / timestep range
    sigma_max: float = 80.0
    rho: float = 7.0  # Eq. 5 schedule curvature

    def __post_init__(self) -> None:
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )


# kind -> its config dataclass (the frameworks: `ddae.diffusion.FRAMEWORKS`)
FRAMEWORK_CONFIGS: dict[str, type] = {"ddpm": DDPMConfig, "edm": EDMConfig}


def framework_config(spec: Mapping[str, Any], where: str = "framework") -> Any:
    """Validate ``{"kind": "ddpm" | "edm", ...}`` and return the framework's config."""
    return tagged_config(spec, "kind", FRAMEWORK_CONFIGS, where)
