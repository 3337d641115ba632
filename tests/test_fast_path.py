"""The CUDA fast path of the frozen-network stages (`ddae.fast_path`; issue 13, item 3).

On the CPU the default configs change nothing: features are bitwise the float32 ones. Forced on
(CPU autocast supports bf16, so the same code paths run here), the fast path stays within these
stated tolerances of float32:

* cached features (`cache_features`): per layer, max |fast − fp32| ≤ 2 % of the layer's largest
  |feature| and mean |fast − fp32| ≤ 1 % of its standard deviation (measured: ≤ 0.9 % and
  ≤ 0.5 % for the tiny DDPM UNet and DDPM++);
* the linear probe with the network in the loop (`linear_probe`): test accuracy within 1.5
  points (3 of 200 test images) and every epoch's training loss within 0.5 %;
* VAE latents (`encode_latents`): max |fast − fp32| ≤ 3 % of the largest |latent|.

benchmarks/gpu_session.py measures the same gaps, and the speed-up, on a GPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DDPMPP_8PX, TINY_UNET_8PX, tiny_checkpoint

from ddae.configs import from_mapping
from ddae.datasets.format import ImageDataset
from ddae.fast_path import FLOAT32, FastPath, tf32_matmul
from ddae.features import FeatureCacheConfig, cache_features, load_feature_cache
from ddae.fid import SamplingConfig
from ddae.latents import LatentCacheConfig, encode_latents, load_vae
from ddae.official.stand_ins import write_stand_in
from ddae.probing.linear_probe import linear_probe
from ddae.settings.probes import LinearProbeConfig
from ddae.sources import ImageSource

pytestmark = pytest.mark.usefixtures("one_thread")

ALL_ON = FastPath(bf16=True, tf32=True, channels_last=True)
RUNS = {  # (network, framework, steps, t): the tiny 8 px networks of the feature tests
    "ddpm_unet": (TINY_UNET_8PX, {"kind": "ddpm", "timesteps": 100}, 100, 11),
    "ddpmpp": (TINY_DDPMPP_8PX, {"kind": "edm"}, 18, 5),
}
FLOAT32_KEYS = {"bf16": False, "tf32": False, "channels_last": False}


def force_fast_path(monkeypatch) -> None:
    """`FastPath.for_device` ignoring the device: the stages run their fast path on the CPU."""
    monkeypatch.setattr(FastPath, "for_device", classmethod(lambda cls, device, **on: cls(**on)))


@pytest.fixture(scope="module")
def colour_classes(tmp_path_factory) -> tuple[Path, Path]:
    """400 train / 200 test 8×8 images of 10 classes, each a class colour plus strong pixel
    noise: the tiny random networks' pooled features separate them only in part (~30-40 %),
    so a probe's accuracy can move either way."""
    folder = tmp_path_factory.mktemp("colours")
    generator = torch.Generator().manual_seed(0)
    colours = torch.rand(10, 3, 1, 1, generator=generator) * 0.6 + 0.2
    for split, count in (("train", 400), ("test", 200)):
        labels = torch.arange(count) % 10
        images = colours[labels] + 0.3 * torch.randn(count, 3, 8, 8, generator=generator)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        ImageDataset(pixels, labels, [f"colour{c}" for c in range(10)]).save(
            folder / f"{split}.npz"
        )
    return folder / "train.npz", folder / "test.npz"


def test_switches_act_on_cuda_only():
    assert FastPath.for_device("cpu") == FLOAT32
    assert FastPath.for_device(torch.device("cuda", 1)) == ALL_ON
    assert FastPath.for_device("cuda", tf32=False) == FastPath(bf16=True, channels_last=True)
    for config_type in (FeatureCacheConfig, LinearProbeConfig, LatentCacheConfig):
        config = from_mapping(config_type, {"bf16": False}, "stage")
        assert config.fast_path("cuda") == FastPath(tf32=True, channels_last=True)
        assert config_type().fast_path("cuda") == ALL_ON
        assert config_type().fast_path("cpu") == FLOAT32
    sampling = SamplingConfig(sampler="heun", steps=18, channels_last=False)
    assert sampling.fast_path("cuda") == FastPath(bf16=True, tf32=True)
    assert ALL_ON.record("cuda:0") == {"device": "cuda", **dict.fromkeys(FLOAT32_KEYS, True)}


def test_running_autocasts_and_restores_the_tf32_switches():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    a = torch.randn(4, 4)
    with ALL_ON.running("cpu"):
        assert (a @ a).dtype == torch.bfloat16
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    with FLOAT32.running("cpu"):
        assert (a @ a).dtype == torch.float32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    with tf32_matmul(False):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    image = torch.randn(2, 3, 4, 4)
    assert ALL_ON.activations(image).is_contiguous(memory_format=torch.channels_last)
    assert FLOAT32.activations(image) is image
    assert ALL_ON.activations(torch.randn(2, 5, 7)).is_contiguous()  # tokens: unchanged


def _cached(run: str, data: tuple[Path, Path], folder: Path, config: dict, device="cpu") -> tuple:
    network, framework, steps, t = RUNS[run]
    checkpoint = tiny_checkpoint(folder / f"{run}.pt", network, framework)
    source = ImageSource(*data)
    cache = load_feature_cache(
        cache_features(checkpoint, source, t, steps, config, folder / "cache", device, False)
    )
    return np.asarray(cache.train, np.float32), np.asarray(cache.test, np.float32), cache


@pytest.mark.parametrize("run", RUNS)
def test_cpu_default_features_are_float32_bitwise(run, colour_classes, tmp_path):
    config = {"views": 1, "batch_size": 100}
    train, test, cache = _cached(run, colour_classes, tmp_path / "default", config)
    plain = _cached(run, colour_classes, tmp_path / "fp32", {**config, **FLOAT32_KEYS})
    assert np.array_equal(train, plain[0]) and np.array_equal(test, plain[1])
    assert cache.meta["config"]["bf16"]  # asked for, but the CPU runs in float32
    assert cache.meta["ran_with"] == {"device": "cpu", **FLOAT32_KEYS}


@pytest.mark.parametrize("run", RUNS)
def test_fast_path_features_within_tolerance(run, colour_classes, tmp_path, monkeypatch):
    config = {"views": 1, "batch_size": 100}
    fp32, fp32_test, _ = _cached(run, colour_classes, tmp_path / "fp32", config)
    force_fast_path(monkeypatch)
    fast, fast_test, cache = _cached(run, colour_classes, tmp_path / "fast", config)
    assert cache.meta["ran_with"] == {"device": "cpu", **dict.fromkeys(FLOAT32_KEYS, True)}
    assert_features_within_tolerance(cache, (fast, fast_test), (fp32, fp32_test))


def assert_features_within_tolerance(cache, fast: tuple, fp32: tuple) -> None:
    """Per layer of the cache, train and test features: the module docstring's bounds."""
    assert not np.array_equal(fast[0], fp32[0])  # bf16 really ran
    for layer in cache.layers:
        columns = slice(layer["offset"], layer["offset"] + layer["dim"])
        for ours, reference in zip(fast, fp32, strict=True):
            error = np.abs(ours[..., columns] - reference[..., columns])
            assert error.max() <= 0.02 * np.abs(reference[..., columns]).max(), layer["name"]
            assert error.mean() <= 0.01 * reference[..., columns].std(), layer["name"]


@pytest.mark.parametrize("run", RUNS)
def test_fast_path_probe_accuracy_within_tolerance(run, colour_classes, tmp_path, monkeypatch):
    network, framework, steps, t = RUNS[run]
    checkpoint = tiny_checkpoint(tmp_path / "net.pt", network, framework)
    probe = {"epochs": 5, "batch_size": 40, "standardize": True, "lr": 1e-2}
    probe["lr_reference_batch"] = 0

    def probed(name: str) -> dict:
        source = ImageSource(*colour_classes)
        return linear_probe(checkpoint, source, 2, t, steps, probe, tmp_path / name, None, "cpu")

    fp32 = probed("fp32.json")
    force_fast_path(monkeypatch)
    fast = probed("fast.json")
    assert fast["ran_with"]["bf16"] and not fp32["ran_with"]["bf16"]
    assert_probe_within_tolerance(fast, fp32)


def assert_probe_within_tolerance(fast: dict, fp32: dict) -> None:
    """Test accuracy within 1.5 points, every epoch's training loss within 0.5 %."""
    assert fp32["test_accuracy"] > 20.0  # above chance (10 %): the features carry the classes
    assert abs(fast["test_accuracy"] - fp32["test_accuracy"]) <= 1.5
    pairs = zip(fast["history"], fp32["history"], strict=True)
    losses = [(ours["train_loss"], reference["train_loss"]) for ours, reference in pairs]
    assert all(abs(a - b) <= 0.005 * b for a, b in losses)
    assert any(a != b for a, b in losses)  # bf16 really ran


def test_fast_path_vae_latents_within_tolerance(tmp_path):
    vae = load_vae(write_stand_in("vae", tmp_path / "vae", {}, seed=0))
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fp32 = encode_latents(vae, images, None, 0.18215)
    fast = encode_latents(ALL_ON.prepare(vae), images, None, 0.18215, ALL_ON)
    assert fast.dtype == torch.float32 and fast.shape == fp32.shape
    error = (fast - fp32).abs().max()
    assert 0 < error <= 0.03 * fp32.abs().max()


def test_tf32_switches_are_not_seen_across_threads():
    """FID scores on a worker thread while the main thread samples with TF32 on: a block with
    ``tf32_matmul(False)`` (the extractors') waits for another thread's TF32 block to end, so it
    never runs under that thread's switches."""
    import threading

    default = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    inside, seen = threading.Event(), []

    def sampler() -> None:
        with tf32_matmul(True):
            inside.set()
            threading.Event().wait(0.2)  # the worker tries to enter meanwhile

    def extractor() -> None:
        inside.wait()
        with tf32_matmul(False):
            seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))

    threads = [threading.Thread(target=sampler), threading.Thread(target=extractor)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [default] and default != (True, True)


# --- the same tolerances on a GPU (the CUDA test set, `pytest -m cuda`) -----------------------


@pytest.mark.cuda
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("run", RUNS)
def test_cuda_fast_path_features_within_tolerance(run, colour_classes, tmp_path):
    """The default config on CUDA runs the fast path (bf16, TF32, channels_last), within the
    CPU-forced bounds of `test_fast_path_features_within_tolerance` of float32 on CUDA."""
    config = {"views": 1, "batch_size": 100}
    fp32, fp32_test, plain = _cached(
        run, colour_classes, tmp_path / "fp32", {**config, **FLOAT32_KEYS}, "cuda"
    )
    fast, fast_test, cache = _cached(run, colour_classes, tmp_path / "fast", config, "cuda")
    assert plain.meta["ran_with"] == {"device": "cuda", **FLOAT32_KEYS}
    assert cache.meta["ran_with"] == {"device": "cuda", **dict.fromkeys(FLOAT32_KEYS, True)}
    assert_features_within_tolerance(cache, (fast, fast_test), (fp32, fp32_test))


@pytest.mark.cuda
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize("run", RUNS)
def test_cuda_fast_path_probe_accuracy_within_tolerance(run, colour_classes, tmp_path):
    """The linear probe with the network in the loop on CUDA: the default fast path against
    float32, the bounds of `test_fast_path_probe_accuracy_within_tolerance`."""
    network, framework, steps, t = RUNS[run]
    checkpoint = tiny_checkpoint(tmp_path / "net.pt", network, framework)
    probe = {"epochs": 5, "batch_size": 40, "standardize": True, "lr": 1e-2}
    probe["lr_reference_batch"] = 0

    def probed(name: str, switches: dict) -> dict:
        source = ImageSource(*colour_classes)
        config = {**probe, **switches}
        return linear_probe(checkpoint, source, 2, t, steps, config, tmp_path / name, None, "cuda")

    fp32, fast = probed("fp32.json", FLOAT32_KEYS), probed("fast.json", {})
    assert fast["ran_with"] == {"device": "cuda", **dict.fromkeys(FLOAT32_KEYS, True)}
    assert fp32["ran_with"] == {"device": "cuda", **FLOAT32_KEYS}
    assert_probe_within_tolerance(fast, fp32)


@pytest.mark.cuda
@pytest.mark.usefixtures("no_tf32")
def test_cuda_fast_path_vae_latents_within_tolerance(tmp_path):
    vae = load_vae(write_stand_in("vae", tmp_path / "vae", {}, seed=0), "cuda")
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(4, 3, 32, 32, generator=generator) * 2 - 1).to("cuda")
    fp32 = encode_latents(vae, images, None, 0.18215)
    fast = encode_latents(ALL_ON.prepare(vae), images, None, 0.18215, ALL_ON)
    assert fast.dtype == torch.float32 and fast.shape == fp32.shape and fast.is_cuda
    error = (fast - fp32).abs().max()
    assert 0 < error <= 0.03 * fp32.abs().max()
