"""Network registry (paper Appendix A, Table 5).

Diffusion networks are plain ``(x, noise_labels, augment_labels=None) -> y`` modules; the
framework (`ddae.diffusion`) turns them into a denoiser D(x, σ). Each one also exposes
``decoder_blocks()``: its ordered decoder blocks, the paper's "layer k/N" (Table 9), so that
feature extraction, truncation and figures share one numbering (k = index + 1).

Networks are built from plain mappings ``{"arch": <name>, **fields of <class>.Config}``
through the explicit `NETWORKS` dict below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from ddae.configs import tagged_config, to_mapping
from ddae.networks.ddpm_unet import DDPMUNet
from ddae.networks.dit import DiT
from ddae.networks.noisy_wide_resnet import NoisyWideResNet
from ddae.networks.song_unet import SongUNet
from ddae.networks.wide_resnet import WideResNet

NETWORKS: dict[str, type[nn.Module]] = {
    "ddpm_unet": DDPMUNet,  # Ho et al. 35.7M UNet (diffusers UNet2DModel, google/ddpm-cifar10-32)
    "ddpmpp": SongUNet,  # DDPM++ as in EDM's SongUNet (55.7M CIFAR-10, 61.8M 64 px)
    "wide_resnet": WideResNet,  # WideResNet-28-10 supervised baseline (Table 8)
    # Noise-conditional WRN-28-10 of Song et al. (Figure 6 baseline): forward(x, condition)
    "noisy_wide_resnet": NoisyWideResNet,
    "dit": DiT,  # DiT-XL/2 on SD-VAE latents (Tables 3, 4; original parameter names)
}


def network_config(spec: Mapping[str, Any], where: str = "network") -> Any:
    """Validate a network spec ``{"arch": ..., ...}`` and return its config dataclass."""
    return tagged_config(spec, "arch", NETWORKS, where)


def build_network(spec: Mapping[str, Any], where: str = "network") -> nn.Module:
    """Instantiate the network described by ``spec`` (``{"arch": ..., **config}``)."""
    config = network_config(spec, where)
    return NETWORKS[spec["arch"]](config)


def network_spec(network: nn.Module) -> dict[str, Any]:
    """The plain mapping that `build_network` turns back into ``network``'s architecture."""
    arch = next(name for name, cls in NETWORKS.items() if type(network) is cls)
    return {"arch": arch, **to_mapping(network.config)}


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())
