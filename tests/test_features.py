"""Feature caching: hooks, pooled dims, per-image determinism and the on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DDPMPP_8PX, TINY_UNET_8PX, tiny_probe_run

from ddae.datasets.digits import load_digits
from ddae.diffusion import build_framework
from ddae.features import (
    DecoderFeatures,
    FeatureError,
    cache_features,
    iter_features,
    load_feature_cache,
)
from ddae.networks import build_network
from ddae.per_item import TRAIN, image_inputs, item_seeds, per_item_crop_flip, per_item_normal
from ddae.sources import ImageSource

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_net(spec):
    torch.manual_seed(0)
    return build_network(spec).eval().requires_grad_(False)


def expected_dims(spec) -> list[int]:
    """Decoder output channels: per level, lowest resolution first, num_blocks + 1 blocks."""
    base = spec.get("base_channels", spec.get("model_channels"))
    return [
        base * mult
        for mult in reversed(spec["channel_mult"])
        for _ in range(spec["num_blocks"] + 1)
    ]


def all_hooks(net) -> int:
    return sum(len(m._forward_hooks) for m in net.modules())


@pytest.mark.parametrize("spec", [TINY_UNET_8PX, TINY_DDPMPP_8PX], ids=["ddpm_unet", "ddpmpp"])
def test_pooled_dims_match_decoder_blocks_and_hooks_are_removed(spec):
    net = tiny_net(spec)
    x = torch.randn(3, 3, 8, 8)
    labels = torch.full((3,), 0.5)
    with DecoderFeatures(net) as features:
        pooled = features(x, labels)
        assert all_hooks(net) == len(net.decoder_blocks())
    assert all_hooks(net) == 0
    assert [p.shape[1] for p in pooled] == expected_dims(spec)
    assert sum(p.shape[1] for p in pooled) == sum(expected_dims(spec))
    assert all(p.dtype == torch.float32 and p.shape[0] == 3 for p in pooled)

    # Manual reference: full forward with plain hooks, mean over H, W.
    reference = []
    handles = [
        module.register_forward_hook(lambda m, a, out: reference.append(out.mean(dim=(2, 3))))
        for _, module in net.decoder_blocks()
    ]
    net(x, labels)
    for handle in handles:
        handle.remove()
    for ours, theirs in zip(pooled, reference, strict=True):
        torch.testing.assert_close(ours, theirs)

    # Early stop at layer 2 gives the same layer-2 features; hooks are gone afterwards too.
    with DecoderFeatures(net, layers=[2]) as features:
        (second,) = features(x, labels)
    torch.testing.assert_close(second, pooled[1])
    assert all_hooks(net) == 0


def test_hooks_are_removed_after_an_exception():
    net = tiny_net(TINY_UNET_8PX)
    with pytest.raises(ZeroDivisionError), DecoderFeatures(net):
        assert all_hooks(net) > 0
        _ = 1 / 0
    assert all_hooks(net) == 0
    with pytest.raises(FeatureError):
        DecoderFeatures(net, layers=[0])
    with pytest.raises(RuntimeError, match="with"):
        DecoderFeatures(net)(torch.zeros(1, 3, 8, 8), torch.zeros(1))


def test_token_features_are_averaged_over_tokens():
    """DiT-style blocks output (B, tokens, C): pooled by the mean over tokens."""

    class Block(torch.nn.Module):
        def forward(self, x):
            return x

    class TokenNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block(), Block()])

        def forward(self, x, noise_labels, augment_labels=None):
            tokens = x.flatten(2).transpose(1, 2)  # (B, H·W, C)
            for block in self.blocks:
                tokens = block(tokens) * 2
            return tokens

        def decoder_blocks(self):
            return [(f"blocks.{i}", b) for i, b in enumerate(self.blocks)]

    x = torch.randn(2, 4, 3, 3)
    with DecoderFeatures(TokenNet()) as features:
        first, second = features(x, torch.zeros(2))
    torch.testing.assert_close(first, x.mean(dim=(2, 3)))
    torch.testing.assert_close(second, 2 * x.mean(dim=(2, 3)))


def extract(net, framework, images, batch_size, seed=0, view=0):
    inputs = image_inputs(images, hflip=True, crop_padding=2, key=(seed, TRAIN))
    rows = torch.zeros(len(images), sum(expected_dims(TINY_UNET_8PX)))
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(batch_size))
    batches = iter_features(
        framework,
        net,
        inputs,
        0.3,
        order,
        noise_key=(seed, TRAIN, view, 1),
        view=view,
        batch_size=batch_size,
        device="cpu",
    )
    for index, pooled in batches:
        rows[index] = torch.cat(pooled, dim=1)
    return rows


def test_features_do_not_depend_on_batch_size_or_order():
    net = tiny_net(TINY_UNET_8PX)
    framework = build_framework({"kind": "ddpm", "timesteps": 100})
    images = load_digits(8)["test"].images[:12]
    a = extract(net, framework, images, batch_size=12)
    b = extract(net, framework, images, batch_size=5)  # other batches, other order
    # Only the convolution kernels' blocking differs between batch sizes: float rounding.
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(extract(net, framework, images, batch_size=12), a, rtol=0, atol=0)
    assert not torch.allclose(extract(net, framework, images, 12, seed=1), a, atol=1e-3)
    assert not torch.allclose(extract(net, framework, images, 12, view=1), a, atol=1e-3)


def test_counter_based_noise_is_standard_normal_and_per_item():
    noise = per_item_normal((0, 0, 0, 1), torch.arange(400), (3, 8, 8))
    assert noise.shape == (400, 3, 8, 8) and noise.dtype == torch.float32
    assert abs(noise.mean().item()) < 0.01 and abs(noise.std().item() - 1) < 0.01
    assert abs((noise.abs() < 1).float().mean().item() - 0.6827) < 0.01  # 76,800 draws
    flat = noise.flatten(1)
    assert (
        abs(torch.corrcoef(torch.stack([flat[:, :-1].flatten(), flat[:, 1:].flatten()]))[0, 1])
        < 0.02
    )
    subset = per_item_normal((0, 0, 0, 1), torch.tensor([399, 7]), (3, 8, 8))
    assert torch.equal(subset, noise[[399, 7]])  # a function of (key, item) only
    params = per_item_crop_flip((0, 0, 0, 0), torch.arange(900), hflip=True, crop_padding=4)
    assert 0.4 < params.flips.float().mean() < 0.6
    assert params.offsets.min() == 0 and params.offsets.max() == 8


def test_item_seeds_are_distinct_and_stable():
    seeds = item_seeds((0, 0, 0, 1), np.arange(1000))
    assert len(set(seeds.tolist())) == 1000 and seeds.max() < 2**63
    assert item_seeds((0, 0, 0, 1), [5])[0] == seeds[5]
    assert item_seeds((0, 0, 1, 1), [5])[0] != seeds[5]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """An untrained tiny DDPM UNet checkpoint and 24 train / 10 test 8×8 digits."""
    return tiny_probe_run(tmp_path_factory.mktemp("features"), 24, 10)


def test_cache_features_writes_fp16_views_and_meta(tiny_run, tmp_path):
    checkpoint, train, test = tiny_run
    config = {"views": 3, "batch_size": 7, "seed": 4}
    out = cache_features(
        checkpoint, ImageSource(train, test), 11, 100, config, tmp_path / "t11", progress=False
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t11"]  # no temporary leftovers
    cache = load_feature_cache(out)
    dims = expected_dims(TINY_UNET_8PX)
    assert cache.train.dtype == np.float16 and cache.test.dtype == np.float16
    assert cache.train.shape == (3, 24, sum(dims)) and cache.test.shape == (10, sum(dims))
    assert np.isfinite(cache.train).all() and np.isfinite(cache.test).all()
    assert cache.train_labels.shape == (24,) and cache.test_labels.dtype == np.int64
    meta = json.loads((out / "meta.json").read_text())
    assert [layer["index"] for layer in meta["layers"]] == [1, 2, 3, 4]
    assert [layer["dim"] for layer in meta["layers"]] == dims
    assert [layer["offset"] for layer in meta["layers"]] == [0, 64, 128, 160]
    assert meta["layers"][0]["name"] == "unet.up_blocks.0.attentions.0"
    assert meta["t"] == 11 and meta["steps"] == 100 and meta["views"] == 3
    assert meta["sigma"] == pytest.approx(0.1106290760)  # DDPM T=100, t = 11
    assert meta["checkpoint"] == str(checkpoint) and meta["config"]["seed"] == 4
    assert meta["created_by"] == "ddae.features.cache_features"
    # Views differ (augmentation + noise), yet a second run at another batch size agrees.
    assert not np.array_equal(cache.train[0], cache.train[1])
    config["batch_size"] = 24
    again = load_feature_cache(
        cache_features(
            checkpoint, ImageSource(train, test), 11, 100, config, tmp_path / "b", progress=False
        )
    )
    np.testing.assert_allclose(again.train, cache.train, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(again.test, cache.test, rtol=2e-3, atol=1e-4)


def test_unknown_config_keys_fail(tiny_run, tmp_path):
    checkpoint, train, test = tiny_run
    with pytest.raises(ValueError, match="vews"):
        cache_features(checkpoint, ImageSource(train, test), 1, 100, {"vews": 2}, tmp_path / "x")
    assert not any(tmp_path.iterdir())


@pytest.mark.cuda
@pytest.mark.usefixtures("no_tf32")
def test_cuda_float32_features_follow_the_cpu_and_not_the_batch_size():
    """On CUDA in float32 (TF32 off) the features are the CPU's up to float rounding, whatever
    the batch size: the per-image crops, flips and noise are drawn on the CPU from counters."""
    framework = build_framework({"kind": "ddpm", "timesteps": 100})
    images = load_digits(8)["test"].images[:12]
    cpu = extract(tiny_net(TINY_UNET_8PX), framework, images, batch_size=12)

    def on_cuda(batch_size: int) -> torch.Tensor:
        net = tiny_net(TINY_UNET_8PX).to("cuda")
        inputs = image_inputs(images, hflip=True, crop_padding=2, key=(0, TRAIN))
        rows = torch.zeros_like(cpu)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(batch_size))
        for index, pooled in iter_features(
            framework, net, inputs, 0.3, order, noise_key=(0, TRAIN, 0, 1), view=0,
            batch_size=batch_size, device="cuda",
        ):  # fmt: skip
            rows[index] = torch.cat(pooled, dim=1).cpu()
        return rows

    torch.testing.assert_close(on_cuda(12), cpu, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(on_cuda(5), cpu, rtol=1e-4, atol=1e-4)
