"""The networks' config keys (paper Appendix A, Table 5), importing no torch.

One frozen dataclass per architecture, the ``Config`` of its network class in `ddae.networks`
(``DDPMUNet.Config is DDPMUNetConfig``), and `NETWORK_CONFIGS`, the ``arch`` names the config
accepts. The Snakefile validates every network spec of config.yaml through `network_config`
while it plans; `ddae.networks.build_network` builds the module from the same dataclass.
`tests/test_network_registry.py` keeps `NETWORK_CONFIGS` equal to `ddae.networks.NETWORKS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ddae.configs import tagged_config


def check_attention_resolutions(
    resolution: int, channel_mult: tuple[int, ...], attn_resolutions: tuple[int, ...]
) -> None:
    """A UNet's ``attn_resolutions`` must be among its levels' resolutions (one halving per
    ``channel_mult`` entry); otherwise the network would silently be built without attention."""
    resolutions = [resolution >> level for level in range(len(channel_mult))]
    unused = sorted(set(attn_resolutions) - set(resolutions))
    if unused:
        raise ValueError(
            f"attn_resolutions {unused} are not among the network's resolutions "
            f"{resolutions}: no attention layer would be built there"
        )


def _check_halvings(resolution: int, channel_mult: tuple[int, ...]) -> None:
    if resolution % 2 ** (len(channel_mult) - 1):
        raise ValueError(
            f"resolution {resolution} is not divisible by "
            f"2^{len(channel_mult) - 1} (one halving per channel_mult level)"
        )


@dataclass(frozen=True)
class DDPMUNetConfig:
    """Ho et al.'s UNet (`ddae.networks.ddpm_unet`), defaults of ``google/ddpm-cifar10-32``."""

    resolution: int = 32
    in_channels: int = 3
    base_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        _check_halvings(self.resolution, self.channel_mult)
        if self.base_channels % 32:
            raise ValueError(f"base_channels {self.base_channels} is not a multiple of 32")
        check_attention_resolutions(self.resolution, self.channel_mult, self.attn_resolutions)


@dataclass(frozen=True)
class SongUNetConfig:
    """DDPM++ as EDM's SongUNet (`ddae.networks.song_unet`), EDM's CIFAR-10 defaults."""

    resolution: int = 32
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (2, 2, 2)
    channel_mult_emb: int = 4
    num_blocks: int = 4
    attn_resolutions: tuple[int, ...] = (16,)
    dropout: float = 0.13
    augment_dim: int = 9
    label_dim: int = 0

    def __post_init__(self) -> None:
        if self.label_dim != 0:
            raise ValueError("label_dim: only unconditional DDPM++ (label_dim 0) is supported")
        _check_halvings(self.resolution, self.channel_mult)
        check_attention_resolutions(self.resolution, self.channel_mult, self.attn_resolutions)


@dataclass(frozen=True)
class DiTConfig:
    """DiT (`ddae.networks.dit`); the defaults are DiT-XL/2 at 256 px."""

    input_size: int = 32  # latent side: 256 px images / VAE factor 8 (paper Appendix A)
    patch_size: int = 2  # "/2" of DiT-XL/2
    in_channels: int = 4  # SD VAE latent channels
    hidden_size: int = 1152  # XL width
    depth: int = 28  # XL: 28 blocks, the "/28" of Table 9
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # ImageNet classes; the null label is index num_classes
    class_dropout_prob: float = 0.1  # > 0 adds the null-class row to the label table
    learn_sigma: bool = True  # checkpoint outputs ε and Σ channels; Σ is dropped here

    def __post_init__(self) -> None:
        if self.input_size % self.patch_size:
            raise ValueError(
                f"input_size {self.input_size} is not divisible by patch_size {self.patch_size}"
            )
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.class_dropout_prob <= 0:
            raise ValueError(
                "class_dropout_prob must be > 0: unconditional features need the null class"
            )


@dataclass(frozen=True)
class WideResNetConfig:
    """WRN-depth-k (`ddae.networks.wide_resnet`); the defaults are Table 8's WRN-28-10."""

    depth: int = 28
    widen_factor: int = 10
    dropout: float = 0.0
    num_classes: int = 10
    in_channels: int = 3

    def __post_init__(self) -> None:
        if (self.depth - 4) % 6:
            raise ValueError(f"depth {self.depth} is not 6n + 4")


@dataclass(frozen=True)
class NoisyWideResNetConfig:
    """Noise-conditional WRN (`ddae.networks.noisy_wide_resnet`, Figure 6 baseline)."""

    depth: int = 28  # WRN-28-10 (Song et al. App. I.1; DDAE Figure 6 baseline)
    widen_factor: int = 10
    num_classes: int = 10
    in_channels: int = 3
    fourier_size: int = 128  # Gaussian Fourier frequencies (embedding 2·128 = 256)
    fourier_scale: float = 16.0  # std of the frequencies (Song et al.)
    embedding_dim: int = 512  # time-embedding channels (128·4)
    condition: bool = True  # False = the official DDAE port's effective model (no condition)

    def __post_init__(self) -> None:
        if self.depth < 4 or (self.depth - 4) % 6:
            raise ValueError(f"depth {self.depth} is not 6n + 4")
        if self.widen_factor < 1 or self.num_classes < 1 or self.in_channels < 1:
            raise ValueError("widen_factor, num_classes and in_channels must be positive")
        if self.fourier_size < 1 or self.embedding_dim < 1:
            raise ValueError("fourier_size and embedding_dim must be positive")


# arch -> its config dataclass (the network classes: `ddae.networks.NETWORKS`)
NETWORK_CONFIGS: dict[str, type] = {
    "ddpm_unet": DDPMUNetConfig,
    "ddpmpp": SongUNetConfig,
    "dit": DiTConfig,
    "wide_resnet": WideResNetConfig,
    "noisy_wide_resnet": NoisyWideResNetConfig,
}


def network_config(
    spec: Mapping[str, Any], where: str = "network", configs: Mapping[str, type] | None = None
) -> Any:
    """Validate a network spec ``{"arch": ..., ...}`` and return its config dataclass.

    ``configs``: arch -> config dataclass, `NETWORK_CONFIGS` unless given."""
    return tagged_config(spec, "arch", NETWORK_CONFIGS if configs is None else configs, where)
