"""DiT network and the latent-space transfer path (paper Sec. 4.2, Tables 3, 4 and 9).

A tiny DiT and a tiny diffusers AutoencoderKL saved by the test go through official-format
import, latent caching, feature caching, the grid search and the final linear probe.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from ddae.checkpoints import load_network
from ddae.data import ImageDataset, apply_crop_flip, load_digits, to_model_range
from ddae.features import (
    AUGMENT_STREAM,
    TRAIN,
    load_feature_cache,
    per_item_crop_flip,
    per_item_normal,
)
from ddae.latents import (
    POSTERIOR_STREAM,
    cache_dit_features,
    cache_latents,
    dit_linear_probe,
    encode_latents,
    load_latents,
    load_vae,
    resize_images,
)
from ddae.networks import build_network, count_parameters, network_spec
from ddae.networks.dit import DiT, dit_parameter_count
from ddae.official import import_official
from ddae.probing import grid_search

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_DIT = {
    "arch": "dit",
    "input_size": 4,  # 32 px images / VAE factor 8
    "patch_size": 2,
    "hidden_size": 32,
    "depth": 3,
    "num_heads": 4,
    "num_classes": 10,
}


def _randomised(network: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Perturb every parameter (adaLN-Zero would otherwise make blocks the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            if parameter.requires_grad:  # not the fixed sin-cos position embedding
                parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return network.eval()


def test_dit_xl2_parameter_count() -> None:
    assert dit_parameter_count(DiT.Config()) == 675_129_632


def test_dit_outputs_eps_with_null_label_and_numbered_blocks() -> None:
    net = _randomised(build_network(TINY_DIT))
    assert network_spec(net)["depth"] == 3 and count_parameters(net) > 0
    x = torch.randn(2, 4, 4, 4)
    t = torch.tensor([0.0, 120.0])
    with torch.no_grad():
        full = net.forward_full(x, t)
        assert full.shape == (2, 8, 4, 4)  # ε and learned-Σ channels
        eps = net(x, t)
        assert torch.equal(eps, full[:, :4])  # learned-σ channels dropped
        null = torch.full((2,), 10)
        assert torch.equal(eps, net(x, t, class_labels=null))
        assert not torch.equal(eps, net(x, t, class_labels=torch.tensor([1, 2])))
    blocks = net.decoder_blocks()
    assert [name for name, _ in blocks] == ["blocks.0", "blocks.1", "blocks.2"]
    with pytest.raises(ValueError, match="augment"):
        net(x, t, torch.zeros(2, 9))


def test_truncated_encoder_matches_hooked_block() -> None:
    net = _randomised(build_network(TINY_DIT))
    x, t = torch.randn(3, 4, 4, 4), torch.tensor([5.0, 50.0, 500.0])
    captured = {}
    name, block = net.decoder_blocks()[1]  # "layer 2/3"
    handle = block.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.no_grad():
        net(x, t)
        encoder = net.truncated(2)
        out = encoder(x, t)
    handle.remove()
    assert encoder.layer_name == name and encoder.out_channels == 32
    assert out.shape == (3, 32, 2, 2)
    tokens = captured["out"]  # (B, N, C)
    assert torch.allclose(out.mean(dim=(2, 3)), tokens.mean(dim=1), atol=1e-6)
    assert len(list(encoder.blocks)) == 2
    with pytest.raises(ValueError, match="layer"):
        net.truncated(4)


def _tiny_vae(folder: Path) -> None:
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    vae.save_pretrained(folder)


def _tiny_splits(tmp_path: Path) -> tuple[Path, Path]:
    digits = load_digits(16)
    paths = []
    for split, count in (("train", 48), ("test", 24)):
        data = digits[split]
        ImageDataset(data.images[:count], data.labels[:count], data.classes).save(
            tmp_path / f"{split}.npz"
        )
        paths.append(tmp_path / f"{split}.npz")
    return paths[0], paths[1]


def test_latents_features_grid_and_probe(tmp_path: Path) -> None:
    vae_dir = tmp_path / "vae"
    _tiny_vae(vae_dir)
    train_path, test_path = _tiny_splits(tmp_path)
    latent_config = {"views": 2, "image_size": 32, "batch_size": 20, "seed": 3}
    latent_dir = cache_latents(
        vae_dir, train_path, test_path, latent_config, tmp_path / "lat", progress=False
    )
    latents = load_latents(latent_dir)
    assert latents.train.shape == (2, 48, 4, 4, 4) and latents.train.dtype == np.float16
    assert latents.test.shape == (24, 4, 4, 4)

    # item 5 of version 1: flip + crop at 16 px, THEN resize to 32, posterior sample, ×0.18215
    vae = load_vae(vae_dir)
    train = ImageDataset.load(train_path)
    index = torch.tensor([5])
    params = per_item_crop_flip((3, TRAIN, 1, AUGMENT_STREAM), index, hflip=True, crop_padding=4)
    image = to_model_range(apply_crop_flip(train.images[index], params, 4))
    eps = per_item_normal((3, TRAIN, 1, POSTERIOR_STREAM), index, (4, 4, 4))
    expected = encode_latents(vae, resize_images(image, 32), eps, 0.18215)
    assert torch.allclose(
        torch.from_numpy(latents.train[1, 5].astype(np.float32)), expected[0], atol=2e-3
    )
    # batch size does not change the cache
    again = cache_latents(
        vae_dir,
        train_path,
        test_path,
        {**latent_config, "batch_size": 7},
        tmp_path / "lat7",
        progress=False,
    )
    assert np.array_equal(load_latents(again).train, latents.train)

    state_path = tmp_path / "DiT-tiny.pt"
    torch.save(_randomised(build_network(TINY_DIT)).state_dict(), state_path)
    checkpoint = tmp_path / "epoch0.pt"
    import_official("dit", state_path, checkpoint, network=TINY_DIT)

    feature_config = {"views": 2, "batch_size": 16, "seed": 0}
    dirs = [
        cache_dit_features(
            checkpoint, latent_dir, t, 1000, feature_config, tmp_path / f"t{t}", progress=False
        )
        for t in (1, 121)
    ]
    cache = load_feature_cache(dirs[1])
    assert [layer["name"] for layer in cache.layers] == ["blocks.0", "blocks.1", "blocks.2"]
    assert [layer["dim"] for layer in cache.layers] == [32, 32, 32]
    assert cache.train.shape == (2, 48, 96) and cache.meta["t"] == 121

    # one test row by hand: token mean of block 2 at t = 121 (DDPM: ᾱ index 120, label 120)
    net, framework, _ = load_network(checkpoint)
    sigma = framework.sigma_at_timestep(121, 1000)
    x0 = torch.from_numpy(latents.test[:1].astype(np.float32))
    noise = per_item_normal((0, 1, 0, 1), torch.tensor([0]), (4, 4, 4))
    net_input, labels = framework.network_inputs(x0 + sigma * noise, torch.tensor([sigma]))
    assert labels.tolist() == [120.0]
    captured = {}
    block = net.decoder_blocks()[1][1]
    handle = block.register_forward_hook(lambda m, i, o: captured.setdefault("out", o))
    with torch.no_grad():
        net(net_input, labels)
    handle.remove()
    by_hand = captured["out"].mean(dim=1)[0]
    row = torch.from_numpy(cache.test[0, 32:64].astype(np.float32))
    assert torch.allclose(row, by_hand, atol=2e-3 * (1 + by_hand.abs().max()))

    record = grid_search(
        dirs,
        {"epochs": 2, "batch_size": 16},
        tmp_path / "grid.csv",
        tmp_path / "grid.json",
        progress=False,
    )
    assert record["probes"] == 6 and record["layer"] in (1, 2, 3)
    probe = dit_linear_probe(
        checkpoint,
        latent_dir,
        2,
        121,
        1000,
        {"epochs": 2, "batch_size": 16},
        tmp_path / "linear.json",
        metrics_path=tmp_path / "linear.jsonl",
        progress=False,
    )
    assert probe["layer_name"] == "blocks.1" and len(probe["history"]) == 2
    assert 0.0 <= probe["test_accuracy"] <= 100.0
    assert json.loads((tmp_path / "linear.json").read_text())["created_by"].endswith(
        "dit_linear_probe"
    )


def test_dit_matches_diffusers_implementation_under_weight_mapping() -> None:
    """Cross-check against diffusers' independent DiT (its converter's weight mapping).

    diffusers' timestep embedding uses ``downscale_freq_shift=1`` (frequencies / (half − 1));
    the original DiT divides by half, which `ddae.networks.dit` follows, so the check sets 0.
    """
    from diffusers import DiTTransformer2DModel

    spec = {**TINY_DIT, "input_size": 8, "depth": 2}
    ours = _randomised(build_network(spec))
    sd = ours.state_dict()
    theirs = DiTTransformer2DModel(
        num_attention_heads=4,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=10,
    ).eval()
    mapped = {
        "pos_embed.proj.weight": sd["x_embedder.proj.weight"],
        "pos_embed.proj.bias": sd["x_embedder.proj.bias"],
        "proj_out_1.weight": sd["final_layer.adaLN_modulation.1.weight"],
        "proj_out_1.bias": sd["final_layer.adaLN_modulation.1.bias"],
        "proj_out_2.weight": sd["final_layer.linear.weight"],
        "proj_out_2.bias": sd["final_layer.linear.bias"],
    }
    for i in range(2):
        ours_b, theirs_b = f"blocks.{i}.", f"transformer_blocks.{i}."
        emb = theirs_b + "norm1.emb."
        for kind in ("weight", "bias"):
            mapped[f"{emb}timestep_embedder.linear_1.{kind}"] = sd[f"t_embedder.mlp.0.{kind}"]
            mapped[f"{emb}timestep_embedder.linear_2.{kind}"] = sd[f"t_embedder.mlp.2.{kind}"]
            mapped[f"{theirs_b}norm1.linear.{kind}"] = sd[f"{ours_b}adaLN_modulation.1.{kind}"]
            q, k, v = sd[f"{ours_b}attn.qkv.{kind}"].chunk(3, dim=0)
            for name, value in (("to_q", q), ("to_k", k), ("to_v", v)):
                mapped[f"{theirs_b}attn1.{name}.{kind}"] = value
            mapped[f"{theirs_b}attn1.to_out.0.{kind}"] = sd[f"{ours_b}attn.proj.{kind}"]
            mapped[f"{theirs_b}ff.net.0.proj.{kind}"] = sd[f"{ours_b}mlp.fc1.{kind}"]
            mapped[f"{theirs_b}ff.net.2.{kind}"] = sd[f"{ours_b}mlp.fc2.{kind}"]
        mapped[f"{emb}class_embedder.embedding_table.weight"] = sd[
            "y_embedder.embedding_table.weight"
        ]
        theirs.transformer_blocks[i].norm1.emb.time_proj.downscale_freq_shift = 0
    theirs.load_state_dict(mapped, strict=True)
    assert torch.equal(theirs.pos_embed.pos_embed, ours.pos_embed)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3, 500]), torch.tensor([10, 4])
    with torch.no_grad():
        expected = theirs(x, timestep=t, class_labels=y).sample
        assert torch.allclose(ours.forward_full(x, t.float(), y), expected, atol=1e-4)
