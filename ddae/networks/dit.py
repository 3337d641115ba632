"""DiT, the latent-space diffusion Transformer of Peebles & Xie (2023), for DDAE's transfer
experiments (paper Sec. 4.2 "Transfer learning with Vision Transformers", Tables 3 and 4).

Written from the original implementation's description (facebookresearch/DiT ``models.py``) and,
like it, built from timm's ``PatchEmbed``, ``Attention`` (qkv bias, PyTorch's fused
scaled-dot-product attention) and ``Mlp`` (tanh-approximated GELU), with the same module and
parameter names (``x_embedder.proj``, ``t_embedder.mlp.{0,2}``,
``y_embedder.embedding_table``, ``pos_embed``, ``blocks.<i>.attn.qkv``, ``blocks.<i>.mlp.fc1``,
``blocks.<i>.adaLN_modulation.1``, ``final_layer.linear``, ...), so the published
``DiT-XL-2-256x256.pt`` state dict loads with ``strict=True``. DiT-XL/2 (28 blocks, width 1152,
16 heads, patch 2 on 4×32×32 latents) has 675,129,632 parameters (the fixed sin-cos
``pos_embed`` included). diffusers' ``DiTTransformer2DModel`` holds per-block embedders and
counts 749,826,464, so it is not used here.

The paper uses the class-conditional checkpoint "in an unconditional manner by dropping label to
null" (Sec. 4.2): `forward` always feeds the null class (index ``num_classes``) unless class
labels are passed, and returns ε only (the first ``in_channels`` output channels; the learned-σ
channels are dropped). The network runs under the DDPM framework (linear β 1e-4..0.02, T = 1000)
on VAE latents (`ddae.latents`), receiving the 0-based step as its noise label.

Layer numbering: ``decoder_blocks()`` lists the 28 transformer blocks, and this project's
"layer k" (as for every network) is ``decoder_blocks()[k - 1]`` = ``blocks.<k-1>``, the output of
the first k blocks; `DiTEncoder` (k) keeps those k blocks. The paper's DiT numbers in Table 9
("12/28" CIFAR-10, "13/28" Tiny-ImageNet, t 121 and 91) are 0-based, as the authors'
FutureXiang/ddae ``DiT/models.py`` hooks ``self.blocks`` as ``f"layer-{idx}"`` (idx 0-based) and
``DiT/linear.py`` noises with ``q_sample(x, t)`` at 0-based t. The encoder sizes settle it: one
DiT-XL/2 block has 23,905,152 parameters and the embeddings (patch, timestep, label, fixed
position) 3,091,968, so Table 3's 314M encoder is 13 blocks (313,858,944) and Table 4's 338M is
14 blocks (337,764,096); 12 blocks would be 290M. So the paper's 12/28 is ``blocks.12`` = layer 13
here, and 13/28 is ``blocks.13`` = layer 14 (`ddae.report.table9` converts; see also
``ddae/reference/paper_results.yaml``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ddae.networks.protocol import ConfiguredNetwork, check_layer, no_augment_labels
from ddae.settings.networks import DiTConfig


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x·(1 + scale) + shift with per-sample (B, C) shift/scale over (B, N, C) tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding (MAE's), (grid_size², embed_dim) float64.

    Half the channels encode the row (first meshgrid output, the column index, as in MAE/DiT's
    "w goes first"), half the other axis; each half is [sin | cos] of position·ω,
    ω_i = 10000^(−i/(D/4)).
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be a multiple of 4, got {embed_dim}")
    coords = np.arange(grid_size, dtype=np.float32)
    grid_w, grid_h = np.meshgrid(coords, coords)  # "w goes first"

    def one_axis(positions: np.ndarray) -> np.ndarray:
        omega = np.arange(embed_dim // 4, dtype=np.float64) / (embed_dim / 4.0)
        omega = 1.0 / 10000**omega
        angles = np.outer(positions.reshape(-1), omega)  # (M, D/4)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)  # (M, D/2)

    return np.concatenate([one_axis(grid_w), one_axis(grid_h)], axis=1)  # (M, D)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of the (0-based) diffusion step followed by a two-layer MLP."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        self.frequency_embedding_size = frequency_embedding_size

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
        """[cos | sin] of t·exp(−ln(max_period)·i/half), i = 0..half−1 (GLIDE), (B, dim)."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
        )
        args = t[:, None].float() * freqs[None]
        embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        return embedding

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        frequencies = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(frequencies.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra row, the null class used for guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(labels)


def _timm_layers() -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    """timm's ``PatchEmbed``, ``Attention`` and ``Mlp``, the original DiT's building blocks
    (facebookresearch/DiT ``models.py`` imports them from ``timm.models.vision_transformer``,
    which re-exports ``timm.layers``). Imported on first use: ``import timm`` loads all of
    timm's models (seconds), and most jobs that import `ddae.networks` build no DiT.
    """
    from timm.layers import Attention, Mlp, PatchEmbed

    return PatchEmbed, Attention, Mlp


def _tanh_gelu() -> nn.Module:
    """The original's ``approx_gelu``: GELU with the tanh approximation, as timm's ``act_layer``."""
    return nn.GELU(approximate="tanh")


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning: (B, N, C), (B, C) → (B, N, C)."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        _, Attention, Mlp = _timm_layers()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
        # PyTorch's fused scaled_dot_product_attention whatever TIMM_FUSED_ATTN says, so that
        # features do not depend on the environment (timm's default path is the same kernel)
        self.attn.fused_attn = True
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(
            in_features=hidden_size,
            hidden_features=int(hidden_size * mlp_ratio),
            act_layer=_tanh_gelu,
            drop=0,
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(
            c
        ).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map of each token back to a p×p×C_out patch."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(ConfiguredNetwork):
    """DiT: ``(x, noise_labels, augment_labels=None) -> ε̂`` on (B, 4, 32, 32) VAE latents.

    ``noise_labels`` are 0-based DDPM steps (B,); the class input is the null label unless
    ``class_labels`` are given. Defaults are DiT-XL/2 at 256 px.
    """

    Config = DiTConfig  # its config keys (torch-free, validated while planning)

    def __init__(self, config: DiTConfig | None = None) -> None:
        super().__init__(config)
        config = self.config
        self.in_channels = config.in_channels
        self.out_channels = config.in_channels * (2 if config.learn_sigma else 1)
        self.patch_size = config.patch_size
        hidden = config.hidden_size

        PatchEmbed = _timm_layers()[0]
        self.x_embedder = PatchEmbed(
            config.input_size, config.patch_size, config.in_channels, hidden, bias=True
        )
        self.t_embedder = TimestepEmbedder(hidden)
        self.y_embedder = LabelEmbedder(config.num_classes, hidden, config.class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # fixed sin-cos embedding, a frozen parameter as in the original (so it is in state dict)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden), requires_grad=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(hidden, config.num_heads, config.mlp_ratio) for _ in range(config.depth)]
        )
        self.final_layer = FinalLayer(hidden, config.patch_size, self.out_channels)
        self.initialize_weights()

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """The original initialisation: Xavier linears, N(0, 0.02) embeddings, adaLN-Zero."""
        if self.pos_embed.is_meta:  # parameter counting without allocation
            return

        def basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

        self.apply(basic_init)
        grid = int(self.x_embedder.num_patches**0.5)
        pos = sincos_pos_embed_2d(self.config.hidden_size, grid)
        self.pos_embed.copy_(torch.from_numpy(pos).float().unsqueeze(0))
        weight = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[-1].bias)
        nn.init.zeros_(self.final_layer.linear.weight)
        nn.init.zeros_(self.final_layer.linear.bias)

    def null_labels(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch,), self.config.num_classes, dtype=torch.long, device=device)

    def embed(
        self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (B, N, hidden) with position embedding and the condition c = t_emb + y_emb."""
        if class_labels is None:
            class_labels = self.null_labels(x.shape[0], x.device)
        tokens = self.x_embedder(x) + self.pos_embed
        c = self.t_embedder(noise_labels.reshape(-1).expand(x.shape[0])) + self.y_embedder(
            class_labels
        )
        return tokens, c

    def encode(
        self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Output tokens (B, N, hidden) of the last block in ``self.blocks``, and c."""
        tokens, c = self.embed(x, noise_labels, class_labels)
        for block in self.blocks:
            tokens = block(tokens, c)  # (B, N, hidden)
        return tokens, c

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, p²·C) tokens → (B, C, H, W) with the original's (h, w, p, q, c) layout."""
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)

    def forward_full(
        self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None
    ) -> torch.Tensor:
        """All output channels (ε and, with learn_sigma, the Σ interpolation), (B, 2C, H, W)."""
        return self.unpatchify(self.final_layer(*self.encode(x, noise_labels, class_labels)))

    def head(self, tokens: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """ε̂ (B, C, H, W) from the last block's tokens: the final layer, Σ channels dropped."""
        return self.unpatchify(self.final_layer(tokens, c))[:, : self.in_channels]

    def forward(
        self,
        x: torch.Tensor,
        noise_labels: torch.Tensor,
        augment_labels: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ε̂ for latents ``x`` (B, C, H, W) at 0-based DDPM steps ``noise_labels`` (B,); the
        truncated `DiTEncoder` runs this too, with its own blocks and ``head``."""
        no_augment_labels(augment_labels, "DiT")
        return self.head(*self.encode(x, noise_labels, class_labels))

    def decoder_blocks(self) -> list[tuple[str, nn.Module]]:
        """The transformer blocks in forward order: layer k is index k − 1 (the paper's 0-based
        DiT "k/28" of Table 9 is index k, i.e. layer k + 1 here).

        A forward hook on a block receives its output tokens (B, N, hidden); features are their
        mean over tokens (as the official DDAE DiT code).
        """
        return [(f"blocks.{index}", block) for index, block in enumerate(self.blocks)]

    @property
    def num_decoder_blocks(self) -> int:
        return self.config.depth

    def truncated(self, layer: int) -> DiTEncoder:
        """Encoder for fine-tuning (paper Sec. 4.2, Table 7): blocks 1..layer, no final layer."""
        return DiTEncoder(self, layer)


class DiTEncoder(nn.Module):
    """DiT cut after block ``layer`` (1-based): ``(x, noise_labels) -> (B, hidden, h, w)``.

    The output tokens of block ``layer`` are laid out as a feature map (token n = row-major
    patch (n // w, n % w)), so the fine-tuning head's mean over (H, W) (`ddae.finetune`) is the
    mean over tokens, exactly the pooled feature a hook on ``decoder_blocks()[layer - 1]`` gives.
    Shares its modules with the DiT it was cut from; the blocks after ``layer`` and the final
    layer are not part of it.
    """

    # the DiT's own input embedding (null class label by default), blocks and forward on the
    # shared modules; only the head differs
    null_labels = DiT.null_labels
    embed = DiT.embed
    encode = DiT.encode
    forward = DiT.forward

    def __init__(self, dit: DiT, layer: int) -> None:
        super().__init__()
        self.config = dit.config
        self.layer = check_layer(layer, dit.config.depth)
        self.x_embedder = dit.x_embedder
        self.t_embedder = dit.t_embedder
        self.y_embedder = dit.y_embedder
        self.pos_embed = dit.pos_embed
        self.blocks = nn.ModuleList(list(dit.blocks)[:layer])
        self.out_channels = dit.config.hidden_size
        self.layer_name = f"blocks.{layer - 1}"
        self.grid = dit.config.input_size // dit.config.patch_size

    def head(self, tokens: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Block ``layer``'s tokens (B, N, hidden) as a feature map (B, hidden, h, w)."""
        batch, _, hidden = tokens.shape
        return tokens.transpose(1, 2).reshape(batch, hidden, self.grid, self.grid)


def dit_parameter_count(config: DiT.Config) -> int:
    """Parameters of a DiT with ``config``, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        network = DiT(config)
    return sum(p.numel() for p in network.parameters())
