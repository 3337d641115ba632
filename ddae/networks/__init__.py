"""Network registry (paper Appendix A, Table 5).

Diffusion networks are plain ``(x, noise_labels, augment_labels=None) -> y`` modules; the
framework (`ddae.diffusion`) turns them into a denoiser D(x, σ). Their interface to the stages
that read representations (``decoder_blocks()``: the paper's "layer k/N" of Table 9, k = index
+ 1; ``truncated(k)``; ``config``) is `ddae.networks.protocol.DiffusionNetwork`.

Networks are built from plain mappings ``{"arch": <name>, **fields of its config dataclass}``
through the explicit `NETWORKS` registry below (as DiT's ``DiT_models`` maps a name to its
builder). Adding a network: its module in this package (the class, derived from
`ddae.networks.protocol.ConfiguredNetwork`, or a builder), its frozen config dataclass with one
`ddae.settings.networks.NETWORK_CONFIGS` line (torch-free: the Snakefile validates network specs
while it plans), one `NETWORKS` line, and its ``arch`` in ``workflow/schemas/config.schema.yaml``
(enum and ``$defs``; ``tests/test_network_registry.py`` keeps the schema and `NETWORK_CONFIGS`
equal to `NETWORKS`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from ddae.configs import to_mapping
from ddae.networks.ddpm_unet import DDPMUNet
from ddae.networks.dit import DiT
from ddae.networks.noisy_wide_resnet import NoisyWideResNet
from ddae.networks.protocol import DiffusionNetwork, TruncatedNetwork
from ddae.networks.song_unet import SongUNet
from ddae.networks.wide_resnet import WideResNet
from ddae.settings import networks as settings

__all__ = [
    "NETWORKS",
    "DiffusionNetwork",
    "NetworkEntry",
    "TruncatedNetwork",
    "build_network",
    "count_parameters",
    "network_config",
    "network_spec",
]


@dataclass(frozen=True)
class NetworkEntry:
    """One registered architecture.

    ``config``: its frozen config dataclass (every field a key of the spec besides ``arch``);
    ``build``: config -> module, whose ``config`` attribute is that config; ``kind``:
    ``"diffusion"`` (satisfies `DiffusionNetwork`) or ``"classifier"`` (images, and for a
    noise-conditional one the condition, -> logits); ``note``: what it is and where from.
    """

    config: type
    build: Callable[[Any], nn.Module]
    kind: Literal["diffusion", "classifier"]
    note: str = ""

    @property
    def Config(self) -> type:  # noqa: N802 (as the network class's ``Config``)
        return self.config


NETWORKS: dict[str, NetworkEntry] = {
    "ddpm_unet": NetworkEntry(
        DDPMUNet.Config, DDPMUNet, "diffusion", "Ho et al. 35.7M UNet (diffusers UNet2DModel)"
    ),
    "ddpmpp": NetworkEntry(
        SongUNet.Config, SongUNet, "diffusion", "DDPM++ as EDM's SongUNet (55.7M / 61.8M at 64 px)"
    ),
    "dit": NetworkEntry(
        DiT.Config, DiT, "diffusion", "DiT-XL/2 on SD-VAE latents (Tables 3, 4; original names)"
    ),
    "wide_resnet": NetworkEntry(
        WideResNet.Config, WideResNet, "classifier", "WideResNet-28-10 baseline (Table 8)"
    ),
    "noisy_wide_resnet": NetworkEntry(
        NoisyWideResNet.Config,
        NoisyWideResNet,
        "classifier",
        "noise-conditional WRN-28-10 of Song et al. (Figure 6): forward(x, condition)",
    ),
}


def network_config(spec: Mapping[str, Any], where: str = "network") -> Any:
    """Validate a network spec ``{"arch": ..., ...}`` and return its config dataclass (any
    `NETWORKS` entry; planning checks `ddae.settings.networks.NETWORK_CONFIGS`, equal to it)."""
    configs = {name: entry.config for name, entry in NETWORKS.items()}
    return settings.network_config(spec, where, configs)


def build_network(spec: Mapping[str, Any], where: str = "network") -> nn.Module:
    """Instantiate the network described by ``spec`` (``{"arch": ..., **config}``)."""
    config = network_config(spec, where)
    return NETWORKS[spec["arch"]].build(config)


def network_spec(network: nn.Module) -> dict[str, Any]:
    """The plain mapping that `build_network` turns back into ``network``'s architecture."""
    config = getattr(network, "config", None)
    arch = next((name for name, e in NETWORKS.items() if type(config) is e.config), None)
    if arch is None or isinstance(network, TruncatedNetwork):
        raise ValueError(f"{type(network).__name__} is not a registered network (ddae.networks)")
    return {"arch": arch, **to_mapping(config)}


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())
