"""DDPM++ (Song et al. 2021, "Score-Based Generative Modeling through SDEs") in the form of
EDM's ``SongUNet`` (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
Generative Models"), the network of DDAE's EDM models (paper Appendix A, Table 5).

Written from EDM's description and source facts for the DDPM++ configuration only: positional
timestep embedding (endpoint=True, sin before cos), standard encoder and decoder, [1, 1]
resampling filter (box down-sampling, nearest up-sampling), embedding width 4 × model_channels,
one-head self-attention at ``attn_resolutions`` and at the lowest resolution's first decoder
block, GroupNorm with min(32, C/4) groups and eps 1e-6, residual outputs scaled by √½, and an
optional bias-free augmentation mapping (EDM's non-leaking augmentation labels, 9 dims).

Module and parameter names equal EDM's (``map_layer0.weight``, ``enc.32x32_conv.weight``,
``dec.16x16_block0.qkv.weight``, ...; resampling convolutions carry EDM's ``resample_filter``
buffer), so the ``model.*`` entries of an official EDM checkpoint load with ``strict=True``
once the ``model.`` prefix is removed. Parameter counts: 55,733,891 for CIFAR-10
(channel_mult 2-2-2) and 61,805,571 at 64 px (1-2-2-2), each 1,152 fewer without the
augmentation mapping.

`decoder_blocks()` gives the paper's "layer k/N" numbering (Table 9): only the decoder modules
named ``<res>x<res>_block<k>`` count (15 for CIFAR-10, 20 at 64 px), lowest resolution first.
`truncated(k)` cuts the network after block k (paper Sec. 3.2 and 4.1, fine-tuning).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddae.networks.protocol import ConfiguredNetwork, check_layer, no_augment_labels
from ddae.settings.networks import SongUNetConfig

SKIP_SCALE = math.sqrt(0.5)  # every residual sum is scaled by √½ (DDPM++)
ZERO_INIT_GAIN = 1e-5  # EDM's "init_zero" for the last layer of each residual branch
ATTENTION_INIT_GAIN = math.sqrt(0.2)  # EDM's "init_attn" for the qkv projection


class Linear(nn.Module):
    """Fully connected layer with Xavier-uniform weights scaled by ``init_gain``, zero bias."""

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, init_gain: float = 1.0
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        nn.init.xavier_uniform_(self.weight, gain=init_gain)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Conv2d(nn.Module):
    """Same-padded convolution, optionally preceded by 2× FIR up- or down-sampling.

    The separable ``resample_filter`` is applied per channel before the convolution: with the
    DDPM++ filter [1, 1] down-sampling is a 2×2 mean and up-sampling repeats each pixel. As in
    EDM, the 2-D filter is a buffer (part of the state dict) only on resampling layers.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: int,
        bias: bool = True,
        up: bool = False,
        down: bool = False,
        resample_filter: tuple[int, ...] = (1, 1),
        init_gain: float = 1.0,
    ) -> None:
        super().__init__()
        if up and down:
            raise ValueError("a convolution resamples up or down, not both")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.up = up
        self.down = down
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel, kernel))
        nn.init.xavier_uniform_(self.weight, gain=init_gain)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        taps = torch.as_tensor(resample_filter, dtype=torch.float32)
        filter_2d = torch.outer(taps, taps)[None, None] / taps.sum().square()  # (1, 1, k, k)
        self.register_buffer("resample_filter", filter_2d if up or down else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample_filter is not None:
            filter_2d = self.resample_filter.to(x.dtype)
            padding = (filter_2d.shape[-1] - 1) // 2
            per_channel = filter_2d.tile(self.in_channels, 1, 1, 1)  # (C_in, 1, k, k)
            if self.up:  # (B, C_in, H, W) -> (B, C_in, 2H, 2W)
                x = F.conv_transpose2d(
                    x, per_channel * 4, stride=2, padding=padding, groups=self.in_channels
                )
            else:  # (B, C_in, H, W) -> (B, C_in, H/2, W/2)
                x = F.conv2d(x, per_channel, stride=2, padding=padding, groups=self.in_channels)
        return F.conv2d(x, self.weight, self.bias, padding=self.weight.shape[-1] // 2)


class GroupNorm(nn.GroupNorm):
    """GroupNorm with min(32, C/4) groups (at least 4 channels per group) and eps 1e-6."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__(min(32, num_channels // 4), num_channels, eps=eps)


class PositionalEmbedding(nn.Module):
    """Sinusoidal embedding of a scalar per sample: (B,) -> (B, num_channels), [sin | cos].

    Frequencies are (1/max_positions)^(i / (num_channels/2 - 1)), i = 0 .. num_channels/2 - 1
    (EDM's ``endpoint=True``). EDM computes [cos | sin] and then swaps the halves in
    ``SongUNet.forward``; this module returns the swapped order directly.
    """

    def __init__(self, num_channels: int, max_positions: int = 10000) -> None:
        super().__init__()
        self.num_channels = num_channels
        self.max_positions = max_positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        exponents = torch.arange(half, dtype=torch.float32, device=x.device) / (half - 1)
        frequencies = (1 / self.max_positions) ** exponents
        angles = torch.outer(x, frequencies.to(x.dtype))  # (B, half)
        return torch.cat([angles.sin(), angles.cos()], dim=1)  # (B, num_channels)


class UNetBlock(nn.Module):
    """DDPM++ residual block, optionally resampling and followed by one-head self-attention.

    The noise embedding is added after the first convolution (no adaptive scale); every
    residual sum is scaled by √½; the skip path has a 1×1 projection whenever the channel
    count or the resolution changes.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        emb_channels: int,
        up: bool = False,
        down: bool = False,
        attention: bool = False,
        dropout: float = 0.0,
        resample_filter: tuple[int, ...] = (1, 1),
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dropout = dropout
        resampling = dict(up=up, down=down, resample_filter=resample_filter)
        self.norm0 = GroupNorm(in_channels)
        self.conv0 = Conv2d(in_channels, out_channels, kernel=3, **resampling)
        self.affine = Linear(emb_channels, out_channels)
        self.norm1 = GroupNorm(out_channels)
        self.conv1 = Conv2d(out_channels, out_channels, kernel=3, init_gain=ZERO_INIT_GAIN)
        self.skip = None
        if out_channels != in_channels or up or down:
            self.skip = Conv2d(in_channels, out_channels, kernel=1, **resampling)
        self.attention = attention
        if attention:
            self.norm2 = GroupNorm(out_channels)
            self.qkv = Conv2d(
                out_channels, out_channels * 3, kernel=1, init_gain=ATTENTION_INIT_GAIN
            )
            self.proj = Conv2d(out_channels, out_channels, kernel=1, init_gain=ZERO_INIT_GAIN)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.skip is None else self.skip(x)  # (B, C_out, H', W')
        x = self.conv0(F.silu(self.norm0(x)))  # (B, C_out, H', W')
        x = F.silu(self.norm1(x + self.affine(emb)[:, :, None, None]))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + shortcut) * SKIP_SCALE
        if self.attention:
            batch, channels, height, width = x.shape
            # EDM's channel layout: qkv channel 3c + j holds query (j=0), key (1), value (2)
            # of channel c, i.e. reshape (B, 3C, H, W) -> (B, C, 3, HW).
            qkv = self.qkv(self.norm2(x)).reshape(batch, channels, 3, height * width)
            query, key, value = qkv.transpose(1, 3).unbind(dim=2)  # each (B, HW, C)
            # softmax(q·k / √C) over keys, one head; same maths as EDM's AttentionOp
            attended = F.scaled_dot_product_attention(query, key, value)  # (B, HW, C)
            attended = attended.transpose(1, 2).reshape(batch, channels, height, width)
            x = (self.proj(attended) + x) * SKIP_SCALE
        return x


class SongUNet(ConfiguredNetwork):
    """DDPM++ UNet: ``(x, noise_labels, augment_labels=None) -> F(x)`` of x's shape.

    ``noise_labels`` (B,) is EDM's c_noise = ln(σ)/4; ``augment_labels`` (B, augment_dim) are
    EDM's augmentation labels, or None (then the augmentation mapping is skipped, as in EDM).
    """

    Config = SongUNetConfig  # its config keys (torch-free, validated while planning)

    def __init__(self, config: SongUNetConfig | None = None) -> None:
        super().__init__(config)
        config = self.config
        noise_channels = config.model_channels  # EDM's channel_mult_noise = 1 for DDPM++
        emb_channels = config.model_channels * config.channel_mult_emb

        def block(in_channels: int, out_channels: int, **options: bool) -> UNetBlock:
            return UNetBlock(
                in_channels, out_channels, emb_channels, dropout=config.dropout, **options
            )

        # Mapping: noise level (and augmentation labels) -> embedding (B, emb_channels).
        self.map_noise = PositionalEmbedding(noise_channels)
        self.map_augment = (
            Linear(config.augment_dim, noise_channels, bias=False) if config.augment_dim else None
        )
        self.map_layer0 = Linear(noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)

        # Encoder: a stem convolution, then per level a down-sampling block (below the top
        # level) and num_blocks blocks. Every encoder output is a skip connection.
        self.enc = nn.ModuleDict()
        channels = config.model_channels
        skip_channels = []
        for level, mult in enumerate(config.channel_mult):
            res = config.resolution >> level
            if level == 0:
                self.enc[f"{res}x{res}_conv"] = Conv2d(config.in_channels, channels, kernel=3)
            else:
                self.enc[f"{res}x{res}_down"] = block(channels, channels, down=True)
            skip_channels.append(channels)
            for index in range(config.num_blocks):
                attention = res in config.attn_resolutions
                out_channels = config.model_channels * mult
                self.enc[f"{res}x{res}_block{index}"] = block(
                    channels, out_channels, attention=attention
                )
                channels = out_channels
                skip_channels.append(channels)

        # Decoder: two middle blocks (the first with attention) at the lowest resolution, an
        # up-sampling block at the others, then num_blocks + 1 blocks that each take one skip
        # connection; attention only in the last block of a level in attn_resolutions.
        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            res = config.resolution >> level
            if level == len(config.channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = block(channels, channels, attention=True)
                self.dec[f"{res}x{res}_in1"] = block(channels, channels)
            else:
                self.dec[f"{res}x{res}_up"] = block(channels, channels, up=True)
            for index in range(config.num_blocks + 1):
                attention = index == config.num_blocks and res in config.attn_resolutions
                out_channels = config.model_channels * mult
                self.dec[f"{res}x{res}_block{index}"] = block(
                    channels + skip_channels.pop(), out_channels, attention=attention
                )
                channels = out_channels
        res = config.resolution
        self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(channels)
        self.dec[f"{res}x{res}_aux_conv"] = Conv2d(
            channels, config.out_channels, kernel=3, init_gain=ZERO_INIT_GAIN
        )

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.decode(x, self.embedding(noise_labels, augment_labels))  # (B, C, R, R)
        res = self.config.resolution
        output_norm = self.dec[f"{res}x{res}_aux_norm"]
        output_conv = self.dec[f"{res}x{res}_aux_conv"]
        return output_conv(F.silu(output_norm(x)))  # (B, out_channels, R, R)

    def embedding(
        self, noise_labels: torch.Tensor, augment_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The noise (and augmentation) embedding (B, emb_channels) every block receives."""
        emb = self.map_noise(noise_labels)  # (B, model_channels)
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        return F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))  # (B, emb_channels)

    def decode(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The encoder, then the decoder blocks in ``self.dec`` (output layers excluded)."""
        skips = []
        for layer in self.enc.values():  # (B, C_in, R, R) -> (B, C, R/2^level, R/2^level)
            x = layer(x, emb) if isinstance(layer, UNetBlock) else layer(x)
            skips.append(x)
        for name, layer in self.dec.items():
            if not isinstance(layer, UNetBlock):
                continue  # the output layers (aux_norm, aux_conv) are applied by forward
            if "_block" in name:
                x = torch.cat([x, skips.pop()], dim=1)  # (B, C + C_skip, r, r)
            x = layer(x, emb)
        return x

    def decoder_blocks(self) -> list[tuple[str, nn.Module]]:
        """The ``<res>x<res>_block<k>`` decoder blocks in forward order (paper Table 9).

        Each name is the module's path in this network (``self.get_submodule(name)``), e.g.
        ``dec.16x16_block0`` for "6/15" on CIFAR-10. The middle (``_in0``, ``_in1``),
        up-sampling and output layers are not counted, following the paper.
        """
        return [(f"dec.{name}", layer) for name, layer in self.dec.items() if "_block" in name]

    @property
    def num_decoder_blocks(self) -> int:
        return len(self.config.channel_mult) * (self.config.num_blocks + 1)

    def truncated(self, layer: int) -> TruncatedSongUNet:
        """The encoder from the input to the output of decoder block ``layer`` (1-based).

        It shares this network's modules (no copy); later decoder modules, the output layers and
        the augmentation mapping (classification passes no augmentation labels) are left out.
        """
        return TruncatedSongUNet(self, layer)


class TruncatedSongUNet(nn.Module):
    """`SongUNet` up to decoder block ``layer``: ``(x, noise_labels) -> (B, C, r, r)``.

    Module names equal the full network's (``enc.32x32_conv``, ``dec.16x16_block0``, ...); the
    computation is `SongUNet`'s own (``embedding``, ``decode``) without augmentation labels and
    stops after its last decoder module, so the output equals
    (bitwise) what a forward hook on ``decoder_blocks()[layer - 1]`` of the full network sees.
    Encoder skips consumed by the removed decoder blocks are computed (every encoder module lies
    on the path to the lowest resolution) but never read.
    """

    embedding = SongUNet.embedding
    decode = SongUNet.decode

    def __init__(self, network: SongUNet, layer: int) -> None:
        super().__init__()
        blocks = network.decoder_blocks()
        self.layer = check_layer(layer, len(blocks))
        self.layer_name = blocks[layer - 1][0]
        self.map_noise = network.map_noise
        self.map_augment = None  # classification passes no augmentation labels
        self.map_layer0 = network.map_layer0
        self.map_layer1 = network.map_layer1
        self.enc = network.enc
        self.dec = nn.ModuleDict()
        for name, module in network.dec.items():
            self.dec[name] = module
            if f"dec.{name}" == self.layer_name:
                break
        self.out_channels = blocks[layer - 1][1].out_channels  # of the output (B, C, r, r)

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        augment_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        no_augment_labels(augment_labels, "the truncated DDPM++ encoder")
        return self.decode(x, self.embedding(noise_labels))  # (B, C, r, r)
