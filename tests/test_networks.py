"""Networks of paper Appendix A / Table 5: exact sizes, decoder-block numbering (Table 9),
EDM-compatible DDPM++ parameter names, and the config contract of the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ddae.configs import ConfigError
from ddae.networks import build_network, count_parameters, network_spec
from ddae.networks.song_unet import PositionalEmbedding, UNetBlock

FULL_SIZE_SPECS = {
    "ddpm_32": {"arch": "ddpm_unet"},
    "ddpm_64": {"arch": "ddpm_unet", "resolution": 64},
    "ddpmpp_cifar": {"arch": "ddpmpp"},
    "ddpmpp_cifar_no_augment": {"arch": "ddpmpp", "augment_dim": 0},
    "ddpmpp_64": {"arch": "ddpmpp", "resolution": 64, "channel_mult": [1, 2, 2, 2]},
    "ddpmpp_64_no_augment": {
        "arch": "ddpmpp",
        "resolution": 64,
        "channel_mult": [1, 2, 2, 2],
        "augment_dim": 0,
    },
    "wrn_28_10": {"arch": "wide_resnet"},
}

PARAMETER_COUNTS = {  # DESIGN.md section 5, counted on the official implementations
    "ddpm_32": 35_746_307,
    "ddpm_64": 35_746_307,
    "ddpmpp_cifar": 55_733_891,
    "ddpmpp_cifar_no_augment": 55_732_739,
    "ddpmpp_64": 61_805_571,
    "ddpmpp_64_no_augment": 61_804_419,
    "wrn_28_10": 36_479_194,
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def full_size():
    networks = {}

    def build(name):
        if name not in networks:
            networks[name] = build_network(FULL_SIZE_SPECS[name])
        return networks[name]

    return build


@pytest.mark.parametrize("name", sorted(PARAMETER_COUNTS))
def test_full_size_parameter_counts(full_size, name):
    assert count_parameters(full_size(name)) == PARAMETER_COUNTS[name]


@pytest.mark.parametrize(
    ("name", "num_blocks", "paper_layer", "module_path"),
    [
        ("ddpm_32", 12, 7, "unet.up_blocks.2.attentions.0"),  # "7/12, 1st block@16"
        ("ddpm_64", 12, 2, "unet.up_blocks.0.resnets.1"),  # "2/12, 2nd block@8"
        ("ddpmpp_cifar", 15, 6, "dec.16x16_block0"),  # "6/15"
        ("ddpmpp_64", 20, 7, "dec.16x16_block1"),  # "7/20"
    ],
)
def test_decoder_block_numbering(full_size, name, num_blocks, paper_layer, module_path):
    network = full_size(name)
    blocks = network.decoder_blocks()
    assert len(blocks) == num_blocks == network.num_decoder_blocks
    layer_name, module = blocks[paper_layer - 1]  # the paper counts from 1
    assert layer_name == module_path
    assert module is network.get_submodule(module_path)
    for block_name, block in blocks:
        assert network.get_submodule(block_name) is block


def test_ddpm_decoder_blocks_take_attention_outputs_at_16(full_size):
    names = [name for name, _ in full_size("ddpm_32").decoder_blocks()]
    assert names[6:9] == [f"unet.up_blocks.2.attentions.{j}" for j in range(3)]
    assert all(".resnets." in name for name in names[:6] + names[9:])


def test_ddpmpp_decoder_blocks_are_the_block_modules_lowest_resolution_first(full_size):
    names = [name for name, _ in full_size("ddpmpp_cifar").decoder_blocks()]
    assert names == [f"dec.{r}x{r}_block{k}" for r in (8, 16, 32) for k in range(5)]


def test_ddpmpp_state_dict_uses_edm_names(full_size):
    state = full_size("ddpmpp_cifar").state_dict()
    assert len(state) == 425  # EDM's SongUNet (DDPM++, augment_dim 9) state dict has 425 entries
    for key in [
        "map_augment.weight",
        "map_layer0.weight",
        "map_layer1.bias",
        "enc.32x32_conv.weight",
        "enc.16x16_down.conv0.resample_filter",
        "enc.16x16_down.skip.weight",
        "enc.16x16_block0.qkv.weight",
        "dec.8x8_in0.proj.weight",
        "dec.8x8_in1.affine.weight",
        "dec.16x16_up.skip.resample_filter",
        "dec.16x16_block4.norm2.weight",
        "dec.32x32_aux_norm.weight",
        "dec.32x32_aux_conv.bias",
    ]:
        assert key in state, key
    assert "map_augment.bias" not in state
    assert "dec.16x16_block0.qkv.weight" not in state  # attention only in the level's last block
    assert state["enc.16x16_block0.qkv.weight"].shape == (768, 256, 1, 1)
    assert state["dec.32x32_block0.conv0.weight"].shape == (256, 512, 3, 3)


TINY_SPECS = {  # small widths, same structure (block counts, attention levels) as the paper's
    "ddpm_32": ({"arch": "ddpm_unet", "base_channels": 32}, 32),
    "ddpm_64": ({"arch": "ddpm_unet", "base_channels": 32, "resolution": 64}, 64),
    "ddpmpp_cifar": ({"arch": "ddpmpp", "model_channels": 16}, 32),
    "ddpmpp_64": (
        {"arch": "ddpmpp", "model_channels": 8, "resolution": 64, "channel_mult": [1, 2, 2, 2]},
        64,
    ),
}

EXPECTED_BLOCK_SHAPES = {  # (channels, resolution) of every decoder block, forward order
    "ddpm_32": [(64, 4)] * 3 + [(64, 8)] * 3 + [(64, 16)] * 3 + [(32, 32)] * 3,
    "ddpm_64": [(64, 8)] * 3 + [(64, 16)] * 3 + [(64, 32)] * 3 + [(32, 64)] * 3,
    "ddpmpp_cifar": [(32, 8)] * 5 + [(32, 16)] * 5 + [(32, 32)] * 5,
    "ddpmpp_64": [(16, 8)] * 5 + [(16, 16)] * 5 + [(16, 32)] * 5 + [(8, 64)] * 5,
}


@pytest.mark.parametrize("name", sorted(TINY_SPECS))
def test_decoder_block_hooks_see_feature_maps(name):
    spec, resolution = TINY_SPECS[name]
    torch.manual_seed(0)
    network = build_network(spec).eval()
    seen = []
    handles = [
        module.register_forward_hook(lambda _m, _i, output, n=block: seen.append((n, output)))
        for block, module in network.decoder_blocks()
    ]
    x = torch.randn(2, 3, resolution, resolution)
    with torch.no_grad():
        y = network(x, torch.tensor([3.0, 0.5]))
    for handle in handles:
        handle.remove()
    assert y.shape == x.shape
    assert [n for n, _ in seen] == [n for n, _ in network.decoder_blocks()]
    shapes = [tuple(output.shape) for _, output in seen]
    assert shapes == [(2, c, r, r) for c, r in EXPECTED_BLOCK_SHAPES[name]]


def test_ddpm_unet_rejects_augment_labels():
    network = build_network(TINY_SPECS["ddpm_32"][0])
    with pytest.raises(ValueError, match="augment"):
        network(torch.randn(1, 3, 32, 32), torch.tensor([5.0]), torch.zeros(1, 9))


def test_ddpmpp_augment_labels_enter_the_embedding():
    torch.manual_seed(0)
    network = build_network(TINY_SPECS["ddpmpp_cifar"][0]).eval()
    x, noise = torch.randn(1, 3, 32, 32), torch.tensor([0.25])
    with torch.no_grad():
        plain = network(x, noise)
        assert torch.equal(network(x, noise, torch.zeros(1, 9)), plain)
        assert not torch.allclose(network(x, noise, torch.ones(1, 9)), plain, rtol=0, atol=0)


def test_ddpmpp_state_dict_round_trip(tmp_path):
    torch.manual_seed(0)
    network = build_network(TINY_SPECS["ddpmpp_cifar"][0]).eval()
    with torch.no_grad():  # move weights off EDM's near-zero init so outputs are informative
        for parameter in network.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    torch.save({"spec": network_spec(network), "state": network.state_dict()}, tmp_path / "n.pt")

    saved = torch.load(tmp_path / "n.pt", weights_only=True)
    assert saved["spec"]["arch"] == "ddpmpp" and saved["spec"]["model_channels"] == 16
    torch.manual_seed(1)
    rebuilt = build_network(saved["spec"]).eval()
    rebuilt.load_state_dict(saved["state"], strict=True)
    x, noise, augment = torch.randn(2, 3, 32, 32), torch.tensor([-1.0, 0.7]), torch.randn(2, 9)
    with torch.no_grad():
        expected = network(x, noise, augment)
        assert expected.abs().max() > 1e-2
        assert torch.equal(rebuilt(x, noise, augment), expected)


def test_attention_uses_edm_qkv_channel_layout():
    """qkv channel 3c + j is query (j=0), key (1), value (2) of channel c, as in EDM."""
    torch.manual_seed(0)
    with_attention = UNetBlock(32, 32, emb_channels=16, attention=True).eval()
    without_attention = UNetBlock(32, 32, emb_channels=16).eval()
    without_attention.load_state_dict(with_attention.state_dict(), strict=False)
    with torch.no_grad():
        for parameter in with_attention.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        without_attention.load_state_dict(with_attention.state_dict(), strict=False)
        x, emb = torch.randn(2, 32, 4, 4), torch.randn(2, 16)
        h = without_attention(x, emb)  # (2, 32, 4, 4)
        q, k, v = with_attention.qkv(with_attention.norm2(h)).reshape(2, 32, 3, 16).unbind(2)
        weights = torch.einsum("ncq,nck->nqk", q, k / math.sqrt(32)).softmax(dim=2)
        attended = torch.einsum("nqk,nck->ncq", weights, v).reshape(2, 32, 4, 4)
        expected = (with_attention.proj(attended) + h) * math.sqrt(0.5)
        torch.testing.assert_close(with_attention(x, emb), expected)


def test_positional_embedding_uses_endpoint_frequencies_sin_first():
    embedding = PositionalEmbedding(8)(torch.tensor([2.0]))
    frequencies = torch.tensor([1.0, 10000 ** (-1 / 3), 10000 ** (-2 / 3), 1e-4])
    expected = torch.cat([(2 * frequencies).sin(), (2 * frequencies).cos()])
    torch.testing.assert_close(embedding[0], expected)


def test_ddpmpp_resampling_is_box_down_and_nearest_up():
    torch.manual_seed(0)
    down = UNetBlock(8, 8, emb_channels=4, down=True)
    up = UNetBlock(8, 8, emb_channels=4, up=True)
    x = torch.randn(1, 8, 4, 4)
    torch.testing.assert_close(down.conv0.resample_filter.sum(), torch.tensor(1.0))
    pooled = F.avg_pool2d(x, 2)  # the skip path: resample, then its 1×1 convolution
    torch.testing.assert_close(down.skip(x), F.conv2d(pooled, down.skip.weight, down.skip.bias))
    repeated = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(up.skip(x), F.conv2d(repeated, up.skip.weight, up.skip.bias))


@pytest.mark.parametrize("arch", ["ddpm_unet", "ddpmpp", "wide_resnet"])
def test_unknown_config_key_is_named(arch):
    with pytest.raises(ConfigError, match="model_chanels"):
        build_network({"arch": arch, "model_chanels": 64})


def test_invalid_values_raise_config_error():
    with pytest.raises(ConfigError, match="label_dim"):
        build_network({"arch": "ddpmpp", "label_dim": 10})
    with pytest.raises(ConfigError, match="resolution"):
        build_network({"arch": "ddpmpp", "resolution": 36, "channel_mult": [1, 2, 2, 2]})
    with pytest.raises(ConfigError, match="depth"):
        build_network({"arch": "wide_resnet", "depth": 27})


def test_network_spec_round_trips_the_config(full_size):
    network = full_size("ddpmpp_64")
    spec = network_spec(network)
    assert spec["channel_mult"] == [1, 2, 2, 2] and spec["augment_dim"] == 9
    assert build_network(spec).config == network.config


@pytest.mark.parametrize("resolution", [32, 64])
def test_tiny_wide_resnet_gives_logits(resolution):
    network = build_network(
        {"arch": "wide_resnet", "depth": 10, "widen_factor": 2, "num_classes": 7}
    ).eval()
    with torch.no_grad():
        logits = network(torch.randn(3, 3, resolution, resolution))
    assert logits.shape == (3, 7)
    assert torch.isfinite(logits).all()
