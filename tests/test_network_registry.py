"""The network registry and protocol (`ddae.networks`, `ddae.networks.protocol`): every
registered diffusion network numbers its decoder blocks lowest resolution first (the paper's
"layer k/N", Table 9) and truncates to exactly the output of block k (Sec. 4.1/4.2 fine-tuning);
a toy network added through the registry runs through the same checks and stages."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from ddae.configs import ConfigError
from ddae.diffusion import FRAMEWORKS, build_framework
from ddae.features import DecoderFeatures
from ddae.finetune import TruncatedClassifier
from ddae.networks import (
    NETWORKS,
    DiffusionNetwork,
    NetworkEntry,
    TruncatedNetwork,
    build_network,
    count_parameters,
    network_config,
    network_spec,
)
from ddae.networks.protocol import check_layer, no_augment_labels
from ddae.settings.frameworks import FRAMEWORK_CONFIGS
from ddae.settings.networks import NETWORK_CONFIGS, SongUNetConfig
from ddae.settings.networks import network_config as settings_network_config

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"

# tiny configs of every registered network: (spec, input shape, noise labels, parameter count)
TINY = {
    "ddpm_unet": ({"arch": "ddpm_unet", "base_channels": 32}, (2, 3, 32, 32), [5, 900], 2_245_763),
    "ddpmpp": ({"arch": "ddpmpp", "model_channels": 16}, (2, 3, 32, 32), [0.3, -1.2], 881_107),
    "dit": (
        {
            "arch": "dit",
            "input_size": 4,
            "patch_size": 2,
            "hidden_size": 32,
            "depth": 3,
            "num_heads": 4,
            "num_classes": 10,
        },
        (2, 4, 4, 4),
        [0, 121],
        None,  # computed from the DiT formula below
    ),
    "wide_resnet": (
        {"arch": "wide_resnet", "depth": 10, "widen_factor": 2, "num_classes": 7},
        (2, 3, 32, 32),
        None,
        303_319,
    ),
    "noisy_wide_resnet": (
        {"arch": "noisy_wide_resnet", "depth": 10, "widen_factor": 2, "num_classes": 7},
        (2, 3, 32, 32),
        [0.1, 0.7],
        801_719,
    ),
}


def dit_parameters(
    hidden: int, depth: int, patch: int, channels: int, classes: int, tokens: int
) -> int:
    """DiT's parameters by the original's layer list (facebookresearch/DiT models.py)."""
    linear = lambda i, o: i * o + o  # noqa: E731
    block = linear(hidden, 3 * hidden) + linear(hidden, hidden)  # attention qkv, proj
    block += linear(hidden, 4 * hidden) + linear(4 * hidden, hidden)  # Mlp fc1, fc2
    block += linear(hidden, 6 * hidden)  # adaLN modulation
    embeddings = channels * patch * patch * hidden + hidden  # patch embedding (a convolution)
    embeddings += linear(256, hidden) + linear(hidden, hidden) + (classes + 1) * hidden
    final = linear(hidden, 2 * hidden) + linear(hidden, patch * patch * 2 * channels)
    return embeddings + tokens * hidden + depth * block + final  # + fixed position embedding


def test_dit_parameter_formula_gives_dit_xl2():
    assert dit_parameters(1152, 28, 2, 4, 1000, tokens=256) == 675_129_632


def test_every_registered_network_has_a_tiny_config_here():
    assert set(TINY) == set(NETWORKS)
    for name, entry in NETWORKS.items():
        assert entry.kind in ("diffusion", "classifier"), name
        assert entry.Config is entry.config


def test_planning_validates_the_registered_networks_configs():
    """The Snakefile checks network specs through the torch-free `NETWORK_CONFIGS`: the same
    arch names and config classes as `NETWORKS`, so planning and `build_network` agree."""
    assert {name: entry.config for name, entry in NETWORKS.items()} == NETWORK_CONFIGS
    spec = {"arch": "ddpmpp", "model_channels": 16}
    assert (
        settings_network_config(spec) == network_config(spec) == SongUNetConfig(model_channels=16)
    )
    assert {kind: framework.Config for kind, framework in FRAMEWORKS.items()} == FRAMEWORK_CONFIGS


def test_the_schema_names_exactly_the_registered_diffusion_networks():
    """The last file outside tests a new network touches is the config schema."""
    schema = yaml.safe_load(SCHEMA.read_text())
    network = schema["$defs"]["pretraining_run"]["properties"]["network"]
    diffusion = {name for name, entry in NETWORKS.items() if entry.kind == "diffusion"}
    assert set(network["properties"]["arch"]["enum"]) == diffusion
    assert set(NETWORKS) <= set(schema["$defs"])


def _hooked_outputs(network: nn.Module, x: torch.Tensor, noise: torch.Tensor) -> list:
    """(name, output) of every decoder block in the order the forward pass reaches them."""
    seen = []
    handles = [
        module.register_forward_hook(lambda _m, _i, out, n=name: seen.append((n, out)))
        for name, module in network.decoder_blocks()
    ]
    try:
        with torch.no_grad():
            y = network(x, noise)
    finally:
        for handle in handles:
            handle.remove()
    assert y.shape == x.shape
    return seen


def check_diffusion_network(network: nn.Module, x: torch.Tensor, noise: torch.Tensor) -> None:
    """The `DiffusionNetwork` protocol, checked on one input."""
    assert isinstance(network, DiffusionNetwork)
    blocks = network.decoder_blocks()
    count = len(blocks)
    assert count == network.num_decoder_blocks >= 2
    names = [name for name, _ in blocks]
    assert len(set(names)) == count
    for name, module in blocks:
        assert network.get_submodule(name) is module
    seen = _hooked_outputs(network, x, noise)
    assert [name for name, _ in seen] == names  # listed in forward order, each reached once
    # lowest resolution first: spatial size (feature maps) or token count never decreases
    sizes = [out.shape[-1] if out.dim() == 4 else out.shape[1] for _, out in seen]
    assert sizes == sorted(sizes)
    full = {id(p) for p in network.parameters()}
    kept = []
    for layer in range(1, count + 1):
        encoder = network.truncated(layer)
        assert isinstance(encoder, TruncatedNetwork)
        assert (encoder.layer, encoder.layer_name) == (layer, names[layer - 1])
        with torch.no_grad():
            out = encoder(x, noise)
        hooked = seen[layer - 1][1]
        assert out.dim() == 4 and out.shape[:2] == (x.shape[0], encoder.out_channels)
        if hooked.dim() == 4:  # a feature map: the very same tensor
            assert torch.equal(out, hooked)
        else:  # tokens (B, N, C), laid out row-major as (B, C, h, w)
            assert torch.equal(out.flatten(2).transpose(1, 2), hooked)
        parameters = list(encoder.parameters())
        assert {id(p) for p in parameters} <= full  # shared, not copied
        kept.append(sum(p.numel() for p in parameters))
        encoder(x, noise).square().mean().backward()  # every kept parameter is used
        assert all(p.grad is not None for p in parameters if p.requires_grad)
        network.zero_grad(set_to_none=True)
    assert kept == sorted(kept) and kept[-1] < count_parameters(network)  # no output layers
    for layer in (0, count + 1):
        with pytest.raises(ValueError, match="layer"):
            network.truncated(layer)


def _randomised(network: nn.Module) -> nn.Module:
    """Move weights off zero-initialised output layers so that every block matters."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return network


@pytest.mark.parametrize("arch", sorted(a for a, e in NETWORKS.items() if e.kind == "diffusion"))
def test_registered_diffusion_networks_follow_the_protocol(arch):
    spec, shape, noise, parameters = TINY[arch]
    torch.manual_seed(0)
    network = _randomised(build_network(spec)).eval()
    if parameters is None:
        parameters = dit_parameters(32, 3, 2, 4, 10, tokens=4)
    assert count_parameters(network) == parameters
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    check_diffusion_network(network, x, torch.tensor(noise, dtype=torch.float32))
    assert network_spec(network) == {**network_spec(build_network(spec)), **spec}


@pytest.mark.parametrize("arch", sorted(a for a, e in NETWORKS.items() if e.kind == "classifier"))
def test_registered_classifiers_give_logits(arch):
    spec, shape, condition, parameters = TINY[arch]
    network = build_network(spec).eval()
    assert not isinstance(network, DiffusionNetwork)
    assert count_parameters(network) == parameters
    inputs = (torch.randn(shape),) + (() if condition is None else (torch.tensor(condition),))
    with torch.no_grad():
        logits = network(*inputs)
    assert logits.shape == (shape[0], spec["num_classes"]) and torch.isfinite(logits).all()
    assert network_spec(network)["arch"] == arch


def test_unregistered_or_truncated_network_has_no_spec():
    with pytest.raises(ValueError, match="not a registered network"):
        network_spec(nn.Linear(2, 2))
    dit = build_network(TINY["dit"][0])  # its encoder shares the DiT's config
    with pytest.raises(ValueError, match="DiTEncoder is not a registered network"):
        network_spec(dit.truncated(2))


# --- a toy network added through the registry ------------------------------------------------
# What a new network needs outside tests: this class in its own module of ddae/networks, one
# NETWORKS line (monkeypatched here), its config dataclass and NETWORK_CONFIGS line in
# ddae/settings/networks.py (torch-free, for planning) and its arch in the config schema.


class ToyUNet(nn.Module):
    """Two-level UNet: stem + noise embedding, a stride-2 convolution, then decoder blocks
    ``dec.low`` (half resolution) and ``dec.high`` (full resolution, with the stem's skip)."""

    @dataclass(frozen=True)
    class Config:
        width: int = 8
        in_channels: int = 3

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.embed = nn.Linear(1, width)
        self.stem = nn.Conv2d(config.in_channels, width, 3, padding=1)
        self.down = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.dec = nn.ModuleDict(
            {"low": nn.Conv2d(width, width, 3, padding=1), "high": nn.Conv2d(width, width, 1)}
        )
        self.out = nn.Conv2d(width, config.in_channels, 3, padding=1)

    def features(self, x, noise_labels, augment_labels=None, upto=2):
        no_augment_labels(augment_labels, "ToyUNet")
        skip = self.stem(x) + self.embed(noise_labels.float()[:, None])[:, :, None, None]
        h = self.dec["low"](F.silu(self.down(F.silu(skip))))
        if upto == 2:
            h = self.dec["high"](F.interpolate(h, scale_factor=2.0) + skip)
        return h

    def forward(self, x, noise_labels, augment_labels=None):
        return self.out(F.silu(self.features(x, noise_labels, augment_labels)))

    def decoder_blocks(self):
        return [(f"dec.{name}", module) for name, module in self.dec.items()]

    @property
    def num_decoder_blocks(self):
        return len(self.dec)

    def truncated(self, layer):
        return ToyEncoder(self, check_layer(layer, self.num_decoder_blocks))


class ToyEncoder(nn.Module):
    def __init__(self, network: ToyUNet, layer: int) -> None:
        super().__init__()
        self.layer, self.layer_name = layer, network.decoder_blocks()[layer - 1][0]
        self.out_channels = network.config.width
        self.embed, self.stem, self.down = network.embed, network.stem, network.down
        self.dec = nn.ModuleDict(list(network.dec.items())[:layer])

    features = ToyUNet.features  # the same trunk, stopped after block ``layer``

    def forward(self, x, noise_labels, augment_labels=None):
        return self.features(x, noise_labels, augment_labels, upto=self.layer)


def test_toy_network_through_the_registry(monkeypatch):
    monkeypatch.setitem(
        NETWORKS, "toy", NetworkEntry(ToyUNet.Config, ToyUNet, "diffusion", "test toy")
    )
    spec = {"arch": "toy", "width": 4}
    assert network_config(spec) == ToyUNet.Config(width=4)
    with pytest.raises(ConfigError, match="widht"):
        build_network({"arch": "toy", "widht": 4})
    torch.manual_seed(0)
    network = build_network(spec).eval()
    assert network_spec(network) == {"arch": "toy", "width": 4, "in_channels": 3}
    assert count_parameters(network) == 8 + 112 + 148 + 148 + 20 + 111
    x, noise = torch.randn(2, 3, 8, 8), torch.tensor([0.5, 2.0])
    check_diffusion_network(network, x, noise)
    with pytest.raises(ValueError, match="augment"):
        network(x, noise, torch.zeros(2, 9))

    # the stages' entry points: pooled decoder features (grid search, linear probe) and the
    # truncated classifier (fine-tuning) see the same block outputs
    framework = build_framework({"kind": "ddpm"})
    classifier = TruncatedClassifier(network, framework, layer=1, t=10, steps=1000, num_classes=3)
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    sigma = torch.full((2,), classifier.sigma, dtype=torch.float64)
    net_input, noise_labels = framework.network_inputs(x0, sigma)
    with torch.no_grad(), DecoderFeatures(network, [1, 2]) as features:
        pooled = features(net_input, noise_labels)
        assert torch.equal(classifier.features(x0), pooled[0])
    assert [p.shape[1] for p in pooled] == [4, 4]
    assert classifier(x0).shape == (2, 3)
