"""DiT network and the latent-space transfer path (paper Sec. 4.2, Tables 3, 4 and 9).

A tiny DiT and a tiny diffusers AutoencoderKL saved by the test go through official-format
import, latent caching, feature caching, the grid search and the final linear probe.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CPU, assert_same_weights, interrupted_and_resumed

from ddae.batching import apply_crop_flip, to_model_range
from ddae.checkpoints import load_checkpoint, load_network
from ddae.classifier_training import (
    PARTIAL_STATE,
    ClassifierTrainer,
    ClassifierTrainingConfig,
)
from ddae.configs import ConfigError
from ddae.datasets.digits import load_digits
from ddae.datasets.format import ImageDataset
from ddae.diffusion import build_framework
from ddae.features import cache_features, load_feature_cache
from ddae.finetune import TruncatedClassifier, finetune
from ddae.latents import (
    POSTERIOR_STREAM,
    cache_latents,
    encode_latents,
    load_latents,
    load_vae,
    resize_images,
)
from ddae.networks import build_network, count_parameters, network_spec
from ddae.networks.dit import DiT, dit_parameter_count
from ddae.official.importers import import_official
from ddae.official.stand_ins import STAND_IN_NOTE, write_stand_in
from ddae.per_item import AUGMENT_STREAM, TRAIN, per_item_crop_flip, per_item_normal
from ddae.probing.grid_search import grid_search
from ddae.probing.linear_probe import linear_probe
from ddae.sources import LatentData, LatentSource

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


def test_dit_is_built_from_timm_layers_with_the_original_names() -> None:
    """As facebookresearch/DiT ``models.py``: timm's PatchEmbed, Attention (qkv bias), Mlp."""
    from timm.layers import Attention, Mlp, PatchEmbed

    net = build_network({**TINY_DIT, "depth": 1})
    assert isinstance(net.x_embedder, PatchEmbed)
    block = net.blocks[0]
    assert isinstance(block.attn, Attention) and isinstance(block.mlp, Mlp)
    assert block.attn.fused_attn  # PyTorch's fused kernel, whatever TIMM_FUSED_ATTN says
    assert isinstance(block.mlp.act, torch.nn.GELU) and block.mlp.act.approximate == "tanh"
    linear = ("weight", "bias")
    expected = {
        "pos_embed",
        *(f"x_embedder.proj.{k}" for k in linear),
        *(f"t_embedder.mlp.{i}.{k}" for i in (0, 2) for k in linear),
        "y_embedder.embedding_table.weight",
        *(
            f"blocks.0.{m}.{k}"
            for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
            for k in linear
        ),
        *(f"blocks.0.adaLN_modulation.1.{k}" for k in linear),
        *(f"final_layer.{m}.{k}" for m in ("linear", "adaLN_modulation.1") for k in linear),
    }
    assert set(net.state_dict()) == expected


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_timm_attention_equals_explicit_softmax_reference(dtype, tolerance) -> None:
    """Fused attention = proj(softmax(Q·Kᵀ/√d)·V) per head, to ``tolerance`` (absolute)."""
    net = _randomised(build_network({**TINY_DIT, "depth": 1})).to(dtype)
    attention = net.blocks[0].attn
    batch, tokens, width, heads = 2, 5, 32, 4
    x = torch.randn(batch, tokens, width, dtype=dtype, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        qkv = attention.qkv(x).reshape(batch, tokens, 3, heads, width // heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, N, d)
        weights = (query @ key.transpose(-2, -1) / math.sqrt(width // heads)).softmax(dim=-1)
        attended = (weights @ value).transpose(1, 2).reshape(batch, tokens, width)
        expected = attention.proj(attended)
        assert expected.abs().max() > 0.1  # not a trivially small output
        torch.testing.assert_close(attention(x), expected, rtol=0, atol=tolerance)


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
        cache_features(
            checkpoint,
            LatentSource(latent_dir),
            t,
            1000,
            feature_config,
            tmp_path / f"t{t}",
            progress=False,
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
    probe = linear_probe(
        checkpoint,
        LatentSource(latent_dir),
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
    saved = json.loads((tmp_path / "linear.json").read_text())
    assert saved["created_by"] == "ddae.probing.linear_probe"
    assert saved["latents"] == str(latent_dir) and "train" not in saved


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


# --- fine-tuning on cached latents (Table 7, DiT rows) ----------------------------------------


@pytest.mark.parametrize("layer", [1, 2, 3])
def test_truncated_dit_feature_equals_hooked_block_token_mean(layer: int) -> None:
    """Fine-tuning features: clean latents, t fixed, null label, token mean of block k (exact)."""
    net = _randomised(build_network({**TINY_DIT, "input_size": 8, "patch_size": 1}))
    framework = build_framework({"kind": "ddpm", "timesteps": 1000})
    x0 = torch.randn(3, 4, 8, 8)
    classifier = TruncatedClassifier(net, framework, layer, 121, 1000, 10).eval()
    sigma = torch.full((3,), framework.sigma_at_timestep(121, 1000), dtype=torch.float64)
    seen = {}
    name, block = net.decoder_blocks()[layer - 1]
    handle = block.register_forward_hook(lambda m, i, o: seen.setdefault("tokens", o))
    with torch.no_grad():
        net(*framework.network_inputs(x0, sigma))  # null class label by default
        got = classifier.features(x0)
    handle.remove()
    assert classifier.layer_name == name and got.shape == (3, 32)
    assert torch.equal(got, seen["tokens"].mean(dim=1))


@pytest.mark.cuda
@pytest.mark.parametrize("layer", [1, 3])
def test_cuda_truncated_dit_feature_equals_hooked_block_token_mean(layer: int) -> None:
    """The same exactness on CUDA (benchmarks/dit_transfer.py measured it for DiT-XL/2 on an
    H200): the truncated encoder runs blocks 1..k with the full network's kernels."""
    net = _randomised(build_network({**TINY_DIT, "input_size": 8, "patch_size": 1})).to("cuda")
    framework = build_framework({"kind": "ddpm", "timesteps": 1000})
    x0 = torch.randn(3, 4, 8, 8, device="cuda")
    classifier = TruncatedClassifier(net, framework, layer, 121, 1000, 10).to("cuda").eval()
    sigma = torch.full((3,), framework.sigma_at_timestep(121, 1000), dtype=torch.float64)
    seen = {}
    handle = net.decoder_blocks()[layer - 1][1].register_forward_hook(
        lambda m, i, o: seen.setdefault("tokens", o)
    )
    with torch.no_grad():
        net(*framework.network_inputs(x0, sigma.to("cuda")))
        got = classifier.features(x0)
    handle.remove()
    assert got.is_cuda and torch.equal(got, seen["tokens"].mean(dim=1))


@pytest.fixture(scope="module")
def stand_in_latents(tmp_path_factory) -> dict[str, Path]:
    """Stand-in VAE and DiT (`write_stand_in`) and 2 latent versions of 48 + 24 digits."""
    folder = tmp_path_factory.mktemp("latents")
    train_path, test_path = _tiny_splits(folder)
    vae = write_stand_in("vae", folder / "vae", {}, seed=0)
    latents = cache_latents(
        vae,
        train_path,
        test_path,
        {"views": 2, "image_size": 32, "batch_size": 48, "seed": 1},
        folder / "latents",
        progress=False,
    )
    checkpoint = write_stand_in("dit", folder / "dit.pt", TINY_DIT, seed=0)
    return {"latents": latents, "checkpoint": checkpoint, "vae": vae}


def test_dit_finetune_on_latents_writes_the_result(stand_in_latents, tmp_path: Path) -> None:
    paths = stand_in_latents
    out, metrics = tmp_path / "finetune" / "epoch0.json", tmp_path / "m.jsonl"
    config = {"epochs": 2, "batch_size": 16, "lr": 8e-5, "optimizer": "adam"}
    latents = LatentSource(paths["latents"])
    finetune(
        paths["checkpoint"], latents, 2, 121, 1000, config, out, metrics,
        tmp_path / "state", processes=1, device="cpu", progress=False,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["created_by"] == "finetune" and result["checkpoint"] == str(paths["checkpoint"])
    assert result["latents"] == str(paths["latents"]) and "train" not in result
    assert result["layer"] == 2 and result["layer_name"] == "blocks.1"
    assert (result["t"], result["steps"], result["epochs"]) == (121, 1000, 2)
    assert result["config"]["hflip"] is False and result["config"]["crop_padding"] == 0
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    assert 0.0 <= result["test_accuracy"] <= 100.0 and result["history"][0]["loss"] > 0
    assert len(metrics.read_text().splitlines()) == 2
    assert not (tmp_path / "state" / PARTIAL_STATE).exists()
    with pytest.raises(ConfigError, match="already augmented"):
        finetune(
            paths["checkpoint"], latents, 2, 121, 1000, {**config, "hflip": True},
            out, None, tmp_path / "s2", processes=1, device="cpu",
        )  # fmt: skip
    wrong = write_stand_in("dit", tmp_path / "wide.pt", {**TINY_DIT, "input_size": 8}, seed=0)
    with pytest.raises(ConfigError, match="latents"):
        finetune(
            wrong, latents, 2, 121, 1000, config, out, None, tmp_path / "s3",
            processes=1, device="cpu",
        )  # fmt: skip


def test_latent_epochs_use_one_cached_version_per_image(stand_in_latents) -> None:
    cache = load_latents(stand_in_latents["latents"])
    data = LatentData(cache, epochs=3, seed=0, device="cpu")
    indices = torch.arange(10, 26)
    chosen = set()
    for epoch in range(3):
        x, labels = data.train_batch(indices, epoch, torch.Generator(), slice(4, 12))
        rows = indices[4:12]
        assert torch.equal(labels, torch.from_numpy(cache.train_labels[rows.numpy()]))
        for row, latent in zip(rows.tolist(), x, strict=True):
            versions = [
                k
                for k in range(2)
                if torch.equal(latent, torch.from_numpy(cache.train[k, row].astype(np.float32)))
            ]
            assert versions, (epoch, row)  # an unmodified cached version: no flip or crop
            chosen.update(versions)
    assert chosen == {0, 1}
    x, labels = data.test_batch(torch.tensor([3, 0]))
    assert torch.equal(x[1], torch.from_numpy(cache.test[0].astype(np.float32)))


def test_dit_finetune_resumes_bitwise(stand_in_latents, tmp_path: Path, monkeypatch) -> None:
    net, framework, _ = load_network(stand_in_latents["checkpoint"])
    config = ClassifierTrainingConfig(
        epochs=2, batch_size=16, lr=1e-3, hflip=False, crop_padding=0, seed=0
    )

    def trainer() -> ClassifierTrainer:
        data = LatentData(load_latents(stand_in_latents["latents"]), 2, 0, "cpu")

        def build() -> torch.nn.Module:
            fresh, _, _ = load_network(stand_in_latents["checkpoint"])
            return TruncatedClassifier(fresh, framework, 2, 121, 1000, 10)

        return ClassifierTrainer(build, data, None, config, CPU, {"id": "dit"})

    # 3 steps an epoch; interrupted in epoch 2, step 2; last snapshot after step 4 (epoch 2, 1)
    straight, history, resumed, resumed_history, resumed_at = interrupted_and_resumed(
        trainer, tmp_path / "state", monkeypatch, snapshot_every_steps=2, interrupt_at_step=5
    )
    assert resumed_at == (4, 1)
    assert_same_weights(straight.network, resumed.network)
    assert history == resumed_history


def test_stand_in_dit_checkpoint_and_vae(stand_in_latents, tmp_path: Path) -> None:
    payload = load_checkpoint(stand_in_latents["checkpoint"])
    assert payload["source"]["kind"] == "stand-in" and payload["source"]["seed"] == 0
    assert payload["source"]["note"] == STAND_IN_NOTE
    net, framework, run = load_network(stand_in_latents["checkpoint"])
    assert run["network"] == network_spec(build_network(TINY_DIT))
    assert run["framework"]["kind"] == "ddpm" and framework.config.timesteps == 1000
    # not the identity blocks of adaLN-Zero: the blocks change the tokens
    x, labels = torch.randn(2, 4, 4, 4), torch.tensor([5.0, 120.0])
    with torch.no_grad():
        one, two = net.truncated(1)(x, labels), net.truncated(2)(x, labels)
    assert not torch.allclose(one, two)
    again = write_stand_in("dit", tmp_path / "again.pt", TINY_DIT, seed=0)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            load_checkpoint(again)["ema"].values(), payload["ema"].values(), strict=True
        )
    )
    vae = load_vae(stand_in_latents["vae"])
    assert json.loads((stand_in_latents["vae"] / "stand_in.json").read_text())["seed"] == 0
    latents = load_latents(stand_in_latents["latents"])
    assert latents.train.shape == (2, 48, 4, 4, 4) and np.isfinite(latents.train).all()
    assert vae.config.latent_channels == 4
    spread = float(latents.train.astype(np.float32).std())
    assert 0.3 < spread < 3.0, spread  # like SD latents × 0.18215: about unit std, not noise
    other = write_stand_in("vae", tmp_path / "vae1", {}, seed=1)
    assert (other / "diffusion_pytorch_model.safetensors").read_bytes() != (
        stand_in_latents["vae"] / "diffusion_pytorch_model.safetensors"
    ).read_bytes()


@pytest.mark.slow
def test_dit_finetune_two_processes_follow_one(stand_in_latents, tmp_path: Path) -> None:
    """torchrun with 2 gloo workers × 8 latents follows one process × 16 latents."""
    config = {"epochs": 1, "batch_size": 16, "lr": 1e-4}
    results, stand_in_checkpoint = [], stand_in_latents["checkpoint"]
    for processes in (1, 2):
        out = tmp_path / f"{processes}.json"
        finetune(
            stand_in_checkpoint, LatentSource(stand_in_latents["latents"]), 2, 121, 1000, config,
            out, None, tmp_path / f"state{processes}", processes=processes, device="cpu",
            progress=False,
        )  # fmt: skip
        results.append(json.loads(out.read_text()))
    one, two = results
    assert (one["processes"], two["processes"]) == (1, 2)
    assert two["history"][0]["loss"] == pytest.approx(one["history"][0]["loss"], rel=1e-4)
    assert two["test_accuracy"] == pytest.approx(one["test_accuracy"], abs=100 / 24 + 1e-9)
