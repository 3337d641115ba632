"""Noise-conditional classifiers (paper Sec. 4.1.3, Eq. 5, Figure 6): the MLP head on frozen
DDAE features and the noise-conditional WideResNet baseline under VP / VE perturbation."""

from __future__ import annotations

import csv
import json
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY_DDPMPP, TINY_UNET, digits_subset, tiny_checkpoint

from ddae.configs import ConfigError
from ddae.diffusion import build_framework
from ddae.networks import build_network, count_parameters, network_spec
from ddae.networks.noisy_wide_resnet import NoisyWideResNet
from ddae.noise_conditional import (
    CSV_COLUMNS,
    NoisyHead,
    TimestepEmbedding,
    train_noisy_head,
    train_noisy_wrn,
)
from ddae.noise_levels import evaluation_timesteps, pack_condition, unpack_condition

TINY_WRN = {
    "arch": "noisy_wide_resnet",
    "depth": 10,
    "widen_factor": 1,
    "embedding_dim": 32,
    "fourier_size": 8,
}
QUICK_HEAD = {"epochs": 1, "batch_size": 100, "eval_batch_size": 200, "bf16": False}
QUICK_WRN = {
    "epochs": 1,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 100,
    "warmup_epochs": 1,
    "hflip": False,
    "bf16": False,
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Path]:
    """A 300 / 200 subset of the 16×16 digits (keeps every forward pass tiny)."""
    root = tmp_path_factory.mktemp("digits")
    return (
        digits_subset(root / "train.npz", "train", 300),
        digits_subset(root / "test.npz", "test", 200),
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == CSV_COLUMNS
        return list(reader)


# --- test levels --------------------------------------------------------------------------------


def test_evaluation_timesteps_follow_the_official_lists():
    ddpm = build_framework({"kind": "ddpm", "timesteps": 1000})
    assert evaluation_timesteps(ddpm, 1000) == [1 + 50 * i for i in range(20)]  # 1, 51, …, 951
    assert evaluation_timesteps(build_framework({"kind": "edm"}), 18) == list(range(1, 19))
    short = build_framework({"kind": "ddpm", "timesteps": 64})
    assert evaluation_timesteps(short, 64) == list(range(1, 65, 3))  # arange(0, 64, 3) + 1
    with pytest.raises(ConfigError, match="T=1000"):
        evaluation_timesteps(ddpm, 18)


def test_timestep_embedding_has_the_official_form():
    embedding = TimestepEmbedding(64)  # official TimeEmbedding(64): 8 frequencies, 16 → 64 → 64
    assert embedding.lin1.in_features == 16 and embedding.lin1.out_features == 64
    assert embedding.lin2.in_features == 64 and embedding.lin2.out_features == 64
    torch.testing.assert_close(embedding.frequencies[[0, -1]], torch.tensor([1.0, 1e-4]))
    out = embedding(torch.tensor([1, 500, 1000]))
    assert out.shape == (3, 64) and not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError):
        TimestepEmbedding(8)


def test_head_learns_a_noise_conditional_task():
    """Class signal whose sign flips with t: only a head that reads τ(t) can separate it."""
    generator = torch.Generator().manual_seed(0)
    dim, classes, levels = 32, 4, 10
    means = torch.randn(classes, dim, generator=generator) * 2.0

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        y = torch.randint(0, classes, (n,), generator=generator)
        t = torch.randint(1, levels + 1, (n,), generator=generator)
        sign = torch.where(t > levels // 2, -1.0, 1.0)[:, None]
        scale = (1.0 - 0.05 * t)[:, None]  # weaker signal at higher noise
        noise = torch.randn(n, dim, generator=generator)
        x = sign * scale * means[y] + noise + means.roll(1, 0)[y]
        return x, t, y

    torch.manual_seed(0)
    head = NoisyHead(dim, classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    for _ in range(300):
        x, t, y = sample(128)
        loss = F.cross_entropy(head(x, t), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x, t, y = sample(2000)
    with torch.no_grad():
        accuracy = (head(x, t).argmax(dim=1) == y).float().mean().item()
    assert accuracy > 0.85  # chance: 0.25


@pytest.mark.parametrize(
    ("network", "framework", "steps", "levels", "expected"),
    [
        (TINY_UNET, {"kind": "ddpm", "timesteps": 64}, 64, 4, [1, 17, 33, 49]),
        (TINY_DDPMPP, {"kind": "edm"}, 4, 20, [1, 2, 3, 4]),
    ],
    ids=["ddpm_t64", "edm_4_levels"],
)
def test_noisy_head_end_to_end_writes_every_level(
    digits, tmp_path, network, framework, steps, levels, expected
):
    checkpoint = tiny_checkpoint(tmp_path / "net.pt", network, framework)
    out = tmp_path / "noisy" / "epoch1.csv"
    metrics = tmp_path / "metrics.jsonl"
    rows = train_noisy_head(
        checkpoint,
        *digits,
        layer=2,
        steps=steps,
        config={**QUICK_HEAD, "test_levels": levels},
        out_csv=out,
        progress=False,
        metrics=metrics,
    )
    written = read_csv(out)
    assert [int(r["t"]) for r in written] == expected == [r["t"] for r in rows]
    assert {int(r["steps"]) for r in written} == {steps}
    sigmas = [float(r["sigma"]) for r in written]
    assert sigmas == sorted(sigmas) and len(set(sigmas)) == len(sigmas)
    fw = build_framework(framework)
    assert sigmas[0] == pytest.approx(fw.sigma_at_timestep(expected[0], steps))
    assert all(0.0 <= float(r["test_accuracy"]) <= 100.0 for r in written)
    assert len(metrics.read_text().splitlines()) == 1


def test_noisy_head_rejects_unknown_config_keys(digits, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "net.pt", TINY_UNET, {"kind": "ddpm", "timesteps": 64})
    with pytest.raises(ConfigError, match="epoch"):
        train_noisy_head(checkpoint, *digits, 1, 64, {"epoch": 3}, tmp_path / "x.csv")


# --- the noise-conditional WideResNet ----------------------------------------------------------


def official_port_parameter_count(blocks: int = 4, k: int = 10, classes: int = 10) -> int:
    """Layer-by-layer count of DDAE's ``wide_28_10_song`` (model/wideresnet_noise_song.py):
    Fourier W (128, requires_grad=False, not counted), time MLP Linear(256, 512) + Linear(512,
    512), 3×3 stem 3→16 without bias, per block GN(in) + conv3×3 + GN(out) + conv3×3 (no bias)
    + Linear(512, out), final GN + Linear; shortcuts are parameter-free."""
    total = (256 * 512 + 512) + (512 * 512 + 512) + 3 * 16 * 9
    channels = 16
    for width in (16 * k, 32 * k, 64 * k):
        for _ in range(blocks):
            total += 2 * channels + channels * width * 9 + 2 * width + width * width * 9
            total += 512 * width + width
            channels = width
    return total + 2 * channels + channels * classes + classes


def test_wrn_28_10_parameter_count_matches_the_official_port():
    net = NoisyWideResNet()
    assert count_parameters(net) == official_port_parameter_count() == 38_913_114
    unconditional = NoisyWideResNet(NoisyWideResNet.Config(condition=False))
    assert count_parameters(unconditional) == 36_220_634  # the port's effective network
    assert build_network(network_spec(net)).config == net.config


def test_wrn_output_depends_on_the_noise_condition():
    torch.manual_seed(0)
    net = build_network(TINY_WRN).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        low = net(x, torch.tensor([0.01, 0.01]))
        high = net(x, torch.tensor([0.9, 0.9]))
        same = net(x, torch.tensor([0.01, 0.01]))
    assert low.shape == (2, 10)
    assert not torch.allclose(low, high, atol=1e-4)
    torch.testing.assert_close(low, same)
    blind = build_network({**TINY_WRN, "condition": False}).eval()
    with torch.no_grad():
        torch.testing.assert_close(blind(x, torch.zeros(2)), blind(x, torch.ones(2)))
    # per-image standardisation: an affine change of an image's intensities changes nothing
    with torch.no_grad():
        torch.testing.assert_close(
            net(3 * x + 1, torch.zeros(2)), net(x, torch.zeros(2)), atol=1e-4, rtol=1e-4
        )


@pytest.mark.parametrize(
    ("perturbation", "framework", "steps", "expected"),
    [
        ("vp", {"kind": "ddpm", "timesteps": 1000}, None, [1 + 50 * i for i in range(20)]),
        ("ve", {"kind": "edm"}, None, list(range(1, 19))),
    ],
)
def test_noisy_wrn_trains_and_tests_every_level(
    digits, tmp_path, perturbation, framework, steps, expected
):
    out = tmp_path / f"noisy_wrn_{perturbation}.csv"
    rows = train_noisy_wrn(
        perturbation, TINY_WRN, framework, *digits, QUICK_WRN, out, progress=False, steps=steps
    )
    written = read_csv(out)
    assert [int(r["t"]) for r in written] == expected == [r["t"] for r in rows]
    fw = build_framework(framework)
    for row in written:
        assert float(row["sigma"]) == pytest.approx(
            fw.sigma_at_timestep(int(row["t"]), int(row["steps"]))
        )
        assert 0.0 <= float(row["test_accuracy"]) <= 100.0


def test_perturbation_must_match_the_framework(digits, tmp_path):
    with pytest.raises(ConfigError, match="DDPM"):
        train_noisy_wrn("vp", TINY_WRN, {"kind": "edm"}, *digits, QUICK_WRN, tmp_path / "x.csv")
    with pytest.raises(ConfigError, match="num_classes"):
        train_noisy_wrn(
            "ve",
            {**TINY_WRN, "num_classes": 3},
            {"kind": "edm"},
            *digits,
            QUICK_WRN,
            tmp_path / "x.csv",
        )


# --- on the shared classifier trainer ----------------------------------------------------------


def test_condition_rides_along_as_one_plane():
    x = torch.randn(3, 3, 8, 8)
    condition = torch.tensor([1.0, 17.0, 0.25])
    packed = pack_condition(x, condition)
    assert packed.shape == (3, 4, 8, 8)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        images, back = unpack_condition(packed.contiguous(memory_format=memory_format))
        assert torch.equal(images, x) and torch.equal(back, condition)
        assert images.is_contiguous(memory_format=memory_format)


def test_trainer_test_split_noise_is_the_same_in_any_chunks(digits):
    """The trainer's own test draws ε per image: shards of any process count agree."""
    from ddae.classifier_training import ClassifierTrainingConfig, ImageData
    from ddae.datasets.format import ImageDataset
    from ddae.noise_levels import LevelNoise, NoisyImageData

    train, test = (ImageDataset.load(path) for path in digits)
    sigmas = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64)
    clean = ImageData(train, test, ClassifierTrainingConfig(epochs=1), torch.device("cpu"))
    data = NoisyImageData(clean, LevelNoise(sigmas), [1, 3], seed=0)
    whole, labels = data.test_batch(torch.arange(10))
    parts = [data.test_batch(torch.arange(0, 10, 2)), data.test_batch(torch.arange(1, 10, 2))]
    interleaved = torch.stack([parts[0][0], parts[1][0]], dim=1).reshape(whole.shape)
    assert torch.equal(whole, interleaved)
    assert whole[:, -1, 0, 0].tolist() == [1.0, 3.0] * 5  # level of test image i: levels[i % 2]


def test_noisy_head_resumes_from_its_partial_state(digits, tmp_path, monkeypatch, caplog):
    """ClassifierTrainer's partial state: only the head is saved (the frozen network stays out),
    and a rerun after an interruption continues from it to the uninterrupted run's accuracies."""
    import ddae.noise_conditional

    checkpoint = tiny_checkpoint(tmp_path / "net.pt", TINY_UNET, {"kind": "ddpm", "timesteps": 64})
    config = {**QUICK_HEAD, "epochs": 2, "test_levels": 4}
    state = tmp_path / "state"
    whole = train_noisy_head(
        checkpoint, *digits, 2, 64, config, tmp_path / "a.csv", progress=False, state_dir=state
    )
    assert not (state / "partial.pt").exists()  # removed once the CSV is written
    assert not state.exists()  # and its emptied folder with it (no leftovers in results/)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # killed after training, before the test levels
        patch.setattr(ddae.noise_conditional, "accuracy_per_level", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train_noisy_head(
                checkpoint,
                *digits,
                2,
                64,
                config,
                tmp_path / "b.csv",
                progress=False,
                state_dir=state,
            )
    saved = torch.load(state / "partial.pt", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1  # written after epoch 1 of 2
    assert saved["model"] and all(key.startswith("head.") for key in saved["model"])
    with caplog.at_level("INFO", logger="ddae.classifier_training"):
        resumed = train_noisy_head(
            checkpoint, *digits, 2, 64, config, tmp_path / "b.csv", progress=False, state_dir=state
        )
    assert "resuming from" in caplog.text
    assert resumed == whole and not state.exists()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_noisy_training_keeps_the_last_partial_batch(digits, tmp_path):
    """drop_last=False as the official DataLoaders: 300 images at 128 are 3 steps (2 full + 44)."""
    metrics = tmp_path / "wrn.metrics.jsonl"
    train_noisy_wrn(
        "vp",
        TINY_WRN,
        {"kind": "ddpm", "timesteps": 1000},
        *digits,
        {**QUICK_WRN, "batch_size": 128},
        tmp_path / "wrn.csv",
        progress=False,
        test_levels=2,
        metrics=metrics,
    )
    (record,) = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert record["step"] == 3


# --- per-level standardisation of the head's features (not in the paper) ------------------------


class _VEInputs:
    """A framework stand-in whose network sees the noisy image and its σ unchanged."""

    def network_inputs(self, x, sigma):
        return x, sigma


def _known_features(x, sigma):
    """Pooled features known in closed form: (mean pixel · 10σ, mean pixel² + σ)."""
    pixel = x.mean(dim=(1, 2, 3))
    return (torch.stack([pixel * 10 * sigma.float(), pixel**2 + sigma.float()], dim=1),)


def test_level_statistics_are_each_levels_own_and_exact():
    """Clean images of known pixel values (σ_t ε = 0 at every level, so x = x0 exactly) whose
    features at level t are known: the statistics are those of each level's own features, and
    every t takes its nearest statistics level (ties: the lower)."""
    from ddae.noise_conditional import frozen_features
    from ddae.noise_levels import LevelNoise, level_statistics

    values = torch.tensor([0, 40, 90, 200, 255, 17], dtype=torch.uint8)
    images = values[:, None, None, None].expand(-1, 3, 2, 2).contiguous()
    steps = 8
    sigma_levels = torch.arange(1, steps + 1, dtype=torch.float64) / 4  # feature σ per level
    pooled = partial(frozen_features, _known_features, _VEInputs(), sigma_levels)
    noise = LevelNoise(torch.zeros(steps, dtype=torch.float64))  # noiseless: x = x0
    mean, scale = level_statistics(pooled, noise, images, [2, 6], seed=0, batch_size=4)

    pixel = values.double() / 127.5 - 1.0  # to_model_range: [0, 255] -> [-1, 1]

    def expected(level: int) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = sigma_levels[level - 1]
        rows = torch.stack([pixel * 10 * sigma, pixel**2 + sigma], dim=1)
        return rows.mean(0), 1 / (rows.var(0, unbiased=False) + 1e-5).sqrt()

    assert mean.shape == scale.shape == (steps, 2)
    for t in range(1, steps + 1):
        level = 2 if t <= 4 else 6  # t = 4 is as near to 2 as to 6: the lower
        want_mean, want_scale = expected(level)
        torch.testing.assert_close(mean[t - 1].double(), want_mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(scale[t - 1].double(), want_scale, rtol=1e-5, atol=0)
    assert scale[0, 0] / scale[-1, 0] == pytest.approx(3.0, rel=1e-5)  # σ 0.5 vs 1.5
    whole = level_statistics(pooled, noise, images, [2, 6], seed=0, batch_size=100)
    torch.testing.assert_close(whole, (mean, scale))  # batching does not change them


def test_level_statistics_see_the_images_noised_as_in_training():
    """With noise, level t's features are of x0 + σ_t ε: their spread grows with σ_t."""
    from ddae.noise_conditional import frozen_features
    from ddae.noise_levels import LevelNoise, level_statistics

    images = torch.full((64, 1, 4, 4), 128, dtype=torch.uint8)  # one grey image, 64 times
    sigmas = torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64)
    pooled = partial(frozen_features, lambda x, s: (x.flatten(1),), _VEInputs(), sigmas)
    mean, scale = level_statistics(pooled, LevelNoise(sigmas), images, [1, 2, 3], 0, 16)
    std = 1 / scale**2 - 1e-5
    assert torch.all(std[0] < 1e-6)  # σ = 0: every image the same
    assert 0.15 < std[1].mean() < 0.35 and 3.0 < std[2].mean() < 5.0  # var ≈ σ² = 0.25, 4


def test_head_input_is_standardised_per_level_and_raw_by_default():
    """With level statistics the head sees (f − mean[t])·scale[t]; without (the default, the
    paper's head) it sees the raw float32 features, bitwise as before the option existed."""
    from ddae.noise_conditional import NoisyHeadClassifier

    def features(x, sigma):  # 16 features per image, scaled by its level's σ
        return (x.flatten(1) * sigma.float()[:, None],)

    generator = torch.Generator().manual_seed(0)
    sigmas = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    x = torch.randn(4, 4, 2, 2, generator=generator)
    t = torch.tensor([1, 3, 2, 3])
    (raw,) = features(x, sigmas[t - 1])
    mean, scale = torch.randn(3, 16, generator=generator), torch.rand(3, 16, generator=generator)
    plain = NoisyHeadClassifier(features, _VEInputs(), sigmas, 16, 10)
    standardised = NoisyHeadClassifier(features, _VEInputs(), sigmas, 16, 10, (mean, scale))
    standardised.head.load_state_dict(plain.head.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(pack_condition(x, t)), plain.head(raw, t))
        want = plain.head((raw - mean[t - 1]) * scale[t - 1], t)
        assert torch.equal(standardised(pack_condition(x, t)), want)
        assert not torch.allclose(want, plain.head(raw, t))


def test_standardised_head_learns_where_the_raw_head_stays_at_chance(digits, tmp_path):
    """An untrained tiny DDPM++'s features move with the level far more than between images;
    per level standardised, the head learns in a few epochs, raw it stays near chance (10 %)."""
    checkpoint = tiny_checkpoint(tmp_path / "net.pt", TINY_DDPMPP, {"kind": "edm"})
    quick = {**QUICK_HEAD, "epochs": 2, "batch_size": 16, "lr": 0.08, "hflip": False}
    accuracy = {}
    for standardize in (False, True):
        rows = train_noisy_head(
            checkpoint,
            *digits,
            layer=2,
            steps=4,
            config={**quick, "standardize": standardize, "standardize_images": 100},
            out_csv=tmp_path / f"{standardize}.csv",
            progress=False,
        )
        accuracy[standardize] = rows[0]["test_accuracy"]
    assert accuracy[True] > accuracy[False] + 10, accuracy  # measured: 22.5 vs 8.5 %


def test_standardize_images_below_two_is_refused():
    from ddae.settings.noisy_heads import NoisyHeadConfig

    assert NoisyHeadConfig().standardize is False  # the paper's head by default
    with pytest.raises(ValueError, match="standardize_images must be >= 2, got 1"):
        NoisyHeadConfig(standardize=True, standardize_images=1)
