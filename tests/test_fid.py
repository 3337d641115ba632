"""FID (paper Sec. 4): Fréchet distance, streaming statistics, clean-fid parity, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import TINY_DDPMPP, TINY_UNET, digits_subset, tiny_checkpoint
from PIL import Image
from torch import nn

from ddae.configs import ConfigError, from_mapping
from ddae.datasets.digits import load_digits
from ddae.diffusion import build_framework
from ddae.fid import (
    FeatureStatistics,
    FIDError,
    SamplingConfig,
    ScoringQueue,
    frechet_distance,
    load_statistics,
    sample_and_score,
    save_statistics,
    write_reference_statistics,
)
from ddae.fid_networks import (
    INCEPTION_FILENAME,
    CleanFIDInception,
    FeatureError,
    RandomConvFeatures,
    build_extractor,
)
from ddae.sampling import ddim_table_of


def random_stats(rng: np.random.Generator, n: int, d: int, shift: float = 0.0):
    features = rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + shift
    return features.mean(0), np.cov(features, rowvar=False)


# --- Fréchet distance ------------------------------------------------------------------------


def test_a_set_against_itself_is_zero():
    mu, sigma = random_stats(np.random.default_rng(0), 400, 64)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8 * np.trace(sigma))


def test_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(16), rng.standard_normal(16)
    a, b = rng.uniform(0.1, 3.0, 16), rng.uniform(0.1, 3.0, 16)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(exact, rel=1e-12)
    # Estimated from 50k samples of each (close means keep the sampling error of ‖μ1 − μ2‖² small).
    mu2 = mu1 + 0.1 * rng.standard_normal(16)
    exact = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    stats = []
    for mu, var in ((mu1, a), (mu2, b)):
        running = FeatureStatistics()
        running.update(mu + np.sqrt(var) * rng.standard_normal((50_000, 16)))
        stats += [running.mean, running.covariance]
    assert frechet_distance(*stats) == pytest.approx(exact, abs=0.02)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_matches_clean_fid_frechet_distance():
    from cleanfid.fid import frechet_distance as clean_fid_distance

    rng = np.random.default_rng(2)
    for n, d in [(300, 32), (1000, 128)]:
        mu1, sigma1 = random_stats(rng, n, d)
        mu2, sigma2 = random_stats(rng, n, d, shift=0.3)
        ours = frechet_distance(mu1, sigma1, mu2, sigma2)
        assert ours == pytest.approx(clean_fid_distance(mu1, sigma1, mu2, sigma2), rel=1e-9)


def test_rank_deficient_covariances_stay_finite_and_nonnegative():
    rng = np.random.default_rng(3)
    mu1, sigma1 = random_stats(rng, 20, 64)  # rank 19 of 64
    mu2, sigma2 = random_stats(rng, 20, 64)
    value = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert np.isfinite(value) and value > 0
    self_distance = frechet_distance(mu1, sigma1, mu1, sigma1)
    assert self_distance == pytest.approx(0, abs=1e-9 * np.trace(sigma1))


def test_incompatible_statistics_are_refused():
    with pytest.raises(ValueError, match="incompatible"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


# --- streaming statistics --------------------------------------------------------------------


def test_streaming_statistics_equal_one_shot_numpy():
    rng = np.random.default_rng(4)
    features = rng.standard_normal((1001, 24)) * rng.uniform(0.1, 5, 24) + 1e3  # large offset
    stats = FeatureStatistics()
    for start, stop in [(0, 1), (1, 300), (300, 301), (301, 1001)]:
        stats.update(torch.from_numpy(features[start:stop]))
    assert stats.count == 1001
    np.testing.assert_allclose(stats.mean, features.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.covariance, np.cov(features, rowvar=False), atol=1e-9)


def test_statistics_file_round_trip(tmp_path):
    stats = FeatureStatistics()
    stats.update(np.random.default_rng(5).standard_normal((10, 3)))
    save_statistics(tmp_path / "ref.npz", stats, "random_conv", "train.npz")
    loaded = load_statistics(tmp_path / "ref.npz")
    assert (loaded.extractor, loaded.count) == ("random_conv", 10)
    np.testing.assert_array_equal(loaded.sigma, stats.covariance)
    with pytest.raises(FIDError, match="not found"):
        load_statistics(tmp_path / "missing.npz")


# --- extractors ------------------------------------------------------------------------------


class StandInInception(nn.Module):
    """The interface clean-fid's InceptionV3W uses: `.layers`, forward(x, return_features)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(3, 8, 9, stride=8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(128, 2048),
        )

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture(scope="module")
def stand_in_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILENAME
    torch.jit.save(torch.jit.script(StandInInception().eval()), str(path))
    return path


def test_inception_features_equal_clean_fid_folder_path(stand_in_weights, tmp_path):
    """Our uint8-tensor path = clean-fid's own PNG-folder path in "clean" mode, same network."""
    from cleanfid.fid import get_folder_features
    from cleanfid.inception_torchscript import InceptionV3W

    images = load_digits(16)["train"].images[:10]
    images[:, 1] = 255 - images[:, 1]  # make the three channels differ
    for i, image in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(image).save(tmp_path / f"{i:03d}.png")
    model = InceptionV3W(str(stand_in_weights.parent), download=False).eval()
    theirs = get_folder_features(
        str(tmp_path), model, num_workers=0, batch_size=10, device=torch.device("cpu"),
        mode="clean", verbose=False,
    )  # fmt: skip
    ours = build_extractor("inception", stand_in_weights, "cpu")(images)
    assert ours.shape == (10, 2048)
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-6, atol=1e-6)


def test_inception_weights_are_required(tmp_path):
    with pytest.raises(FeatureError, match=INCEPTION_FILENAME):
        CleanFIDInception(None)
    with pytest.raises(FeatureError, match="not found"):
        CleanFIDInception(tmp_path / INCEPTION_FILENAME)


def test_random_conv_is_deterministic_and_offline():
    images = load_digits(16)["train"].images[:8]
    first, second = RandomConvFeatures()(images), RandomConvFeatures()(images)
    assert first.shape == (8, RandomConvFeatures.feature_dim)
    assert torch.equal(first, second)
    assert torch.equal(RandomConvFeatures()(images[:, :1]), first)  # grayscale → RGB
    with pytest.raises(FeatureError, match="takes no weights"):
        build_extractor("random_conv", "x.pt")
    with pytest.raises(FeatureError, match="unknown feature extractor"):
        build_extractor("vgg")


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """A random-weight EDM DDPM++ checkpoint and a 64-image training split, both at 16 px."""
    folder = tmp_path_factory.mktemp("run")
    network = {**TINY_DDPMPP, "dropout": 0.0}
    return (
        tiny_checkpoint(folder / "epoch1.pt", network, {"kind": "edm"}),
        digits_subset(folder / "train.npz", count=64),
    )


SAMPLING = {"samples": 5, "sampler": "heun", "steps": 2, "batch_size": 3, "seed": 3}  # 3 evals


def test_sample_and_score_end_to_end(tiny_run, tmp_path):
    checkpoint, train = tiny_run
    reference = write_reference_statistics(
        train, tmp_path / "ref.npz", "random_conv", None, 32, "cpu", progress=False
    )
    assert (reference.count, reference.extractor) == (64, "random_conv")
    result = sample_and_score(
        checkpoint, tmp_path / "ref.npz", tmp_path / "fid.json", tmp_path / "grid.png",
        SAMPLING, "random_conv", None, "cpu", progress=False,
    )  # fmt: skip
    written = json.loads((tmp_path / "fid.json").read_text())
    assert written == result
    expected = {"fid", "extractor", "samples", "sampler", "steps", "reference", "checkpoint"}
    assert expected | {"config", "created_by"} <= written.keys()
    assert written["samples"] == 5 and written["sampler"] == "heun" and written["steps"] == 2
    assert written["ddim_table"] is None  # Heun on EDM: no DDIM table
    assert written["extractor"] == "random_conv" and written["fid"] > 0
    assert written["config"]["seed"] == 3 and written["created_by"].endswith("sample_and_score")
    assert written["config"]["bf16"]  # the default, which acts on CUDA only: on the CPU
    assert written["ran_with"] == {
        "device": "cpu",
        "bf16": False,
        "tf32": False,
        "channels_last": False,
    }
    with Image.open(tmp_path / "grid.png") as grid:
        grid.verify()
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (8 * 17 + 1, 17 + 1) and grid.mode == "RGB"  # 5 images, one row

    # Per-image seeds: another batch size gives the same samples, hence the same FID.
    again = sample_and_score(
        checkpoint, tmp_path / "ref.npz", tmp_path / "fid2.json", tmp_path / "grid2.png",
        {**SAMPLING, "batch_size": 5}, "random_conv", None, "cpu", progress=False,
    )  # fmt: skip
    assert again["fid"] == pytest.approx(result["fid"], rel=1e-5)


def test_reference_of_another_extractor_is_refused(tmp_path):
    stats = FeatureStatistics()
    stats.update(np.random.default_rng(6).standard_normal((4, 2048)))
    save_statistics(tmp_path / "ref.npz", stats, "inception", "train.npz")
    with pytest.raises(FIDError, match=r"ref\.npz.*'inception'.*out\.json.*'random_conv'"):
        sample_and_score(
            tmp_path / "missing.pt", tmp_path / "ref.npz", tmp_path / "out.json",
            tmp_path / "out.png", SAMPLING, "random_conv", None, "cpu",
        )  # fmt: skip
    assert not (tmp_path / "out.json").exists()


def test_sampling_config_names_unknown_keys(tmp_path):
    with pytest.raises(ConfigError, match="sampling: unknown key 'stpes'"):
        sample_and_score(
            "x.pt", "ref.npz", tmp_path / "o.json", tmp_path / "o.png",
            {"sampler": "heun", "stpes": 18}, "random_conv", None, "cpu",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="sampler"):
        sample_and_score(
            "x.pt", "ref.npz", tmp_path / "o.json", tmp_path / "o.png",
            {"sampler": "euler", "steps": 18}, "random_conv", None, "cpu",
        )  # fmt: skip


def test_fid_json_records_the_ddim_table(tiny_run, tmp_path):
    """DDIM on a DDPM samples on the authors' table unless told otherwise, and says which."""
    _, train = tiny_run
    checkpoint = tiny_checkpoint(
        tmp_path / "ddpm.pt", {**TINY_UNET, "dropout": 0.0}, {"kind": "ddpm", "timesteps": 100}
    )
    write_reference_statistics(train, tmp_path / "ref.npz", "random_conv", None, 32, "cpu", False)
    ddim = {"samples": 3, "sampler": "ddim", "steps": 2, "batch_size": 3}
    results = {
        table: sample_and_score(
            checkpoint,
            tmp_path / "ref.npz",
            tmp_path / f"{table}.json",
            tmp_path / f"{table}.png",
            {**ddim, **({"ddim_table": table} if table else {})},
            "random_conv",
            None,
            "cpu",
            progress=False,
        )
        for table in (None, "authors", "training")
    }
    assert [results[t]["ddim_table"] for t in results] == ["authors", "authors", "training"]
    assert results[None]["fid"] == results["authors"]["fid"] != results["training"]["fid"]
    assert json.loads((tmp_path / "None.json").read_text())["ddim_table"] == "authors"


def test_ddim_table_is_refused_without_a_ddpm_ddim(tiny_run, tmp_path):
    checkpoint, train = tiny_run  # an EDM checkpoint
    with pytest.raises(ConfigError, match="ddim_table applies to the ddim sampler only"):
        sample_and_score(
            checkpoint, "ref.npz", tmp_path / "o.json", tmp_path / "o.png",
            {**SAMPLING, "ddim_table": "authors"}, "random_conv", None, "cpu",
        )  # fmt: skip
    write_reference_statistics(train, tmp_path / "ref.npz", "random_conv", None, 32, "cpu", False)
    with pytest.raises(ConfigError, match="ddim_table: 'training' applies .* not to .* EDM"):
        sample_and_score(
            checkpoint, tmp_path / "ref.npz", tmp_path / "o.json", tmp_path / "o.png",
            {**SAMPLING, "sampler": "ddim", "ddim_table": "training"}, "random_conv", None, "cpu",
        )  # fmt: skip
    assert not (tmp_path / "o.json").exists()


def test_paper_config_samples_every_ddpm_fid_with_the_authors_ddim():
    """The paper's DDPM FIDs (Table 2, Figure 4) come from the authors' ddim_sample: every
    DDPM run of config.yaml with an FID samples on their DDIM table, and its JSON says so."""
    config = yaml.safe_load((Path(__file__).parents[1] / "config.yaml").read_text())
    tables = {}
    for name, run in config["pretraining"].items():
        if "fid" in run.get("evaluation", {}):
            sampling = from_mapping(SamplingConfig, run["evaluation"]["fid"], name)
            framework = build_framework(run["framework"])
            tables[name] = ddim_table_of(framework, sampling.sampler, sampling.ddim_table)
            if run["framework"]["kind"] == "ddpm":
                assert sampling.ddim_table == "authors", name  # stated, so a change reruns it
    ddpm_runs = [name for name, table in tables.items() if table == "authors"]
    assert len(ddpm_runs) == 8 and set(tables.values()) == {"authors", None}, tables


def test_scoring_overlapped_with_sampling_gives_the_same_statistics(tiny_run, tmp_path):
    """`ScoringQueue` with overlap (the CUDA default) scores batch k on a worker thread while
    batch k + 1 samples; batches enter the statistics in order, so the FID is bitwise the
    serial one."""
    checkpoint, train = tiny_run
    write_reference_statistics(train, tmp_path / "ref.npz", "random_conv", None, 32, "cpu", False)
    results = [
        sample_and_score(
            checkpoint,
            tmp_path / "ref.npz",
            tmp_path / f"{mode}.json",
            tmp_path / f"{mode}.png",
            {**SAMPLING, "samples": 7, "batch_size": 2},
            "random_conv",
            None,
            "cpu",
            progress=False,
            overlap_scoring=overlap,
        )
        for mode, overlap in (("serial", False), ("overlap", True))
    ]
    assert results[0]["fid"] == results[1]["fid"] and results[1]["samples"] == 7
    assert (tmp_path / "serial.png").read_bytes() == (tmp_path / "overlap.png").read_bytes()


def test_scoring_queue_keeps_order_and_reraises_the_workers_error():
    seen: list[int] = []

    def extract(images):
        if int(images[0, 0, 0, 0]) == 3:
            raise FeatureError("batch 3 cannot be scored")
        seen.append(int(images[0, 0, 0, 0]))
        return images.flatten(1).float()

    stats = FeatureStatistics()
    batches = [torch.full((2, 1, 2, 2), value, dtype=torch.uint8) for value in range(5)]
    with ScoringQueue(extract, stats, torch.device("cpu"), overlap=True) as queue:
        for batch in batches[:3]:
            queue.submit(batch)
    assert seen == [0, 1, 2] and stats.count == 6
    failing = ScoringQueue(extract, FeatureStatistics(), torch.device("cpu"), overlap=True)
    with pytest.raises(FeatureError, match="batch 3"), failing as queue:
        for batch in batches:
            queue.submit(batch)


@pytest.mark.cuda
def test_cuda_overlapped_scoring_gives_the_same_statistics(tiny_run, tmp_path):
    """On CUDA (the default there) batch k is scored on a worker thread and its own CUDA stream
    while batch k + 1 samples with the fast path: the same samples and FID as in series."""
    checkpoint, train = tiny_run
    write_reference_statistics(train, tmp_path / "ref.npz", "random_conv", None, 32, "cuda", False)
    results = [
        sample_and_score(
            checkpoint, tmp_path / "ref.npz", tmp_path / f"{mode}.json", tmp_path / f"{mode}.png",
            {**SAMPLING, "samples": 7, "batch_size": 2}, "random_conv", None, "cuda",
            progress=False, overlap_scoring=overlap,
        )
        for mode, overlap in (("serial", False), ("overlap", True))
    ]  # fmt: skip
    assert results[0]["ran_with"] == {"device": "cuda", "bf16": True, "tf32": True,
                                      "channels_last": True}  # fmt: skip
    assert (tmp_path / "serial.png").read_bytes() == (tmp_path / "overlap.png").read_bytes()
    assert results[1]["samples"] == 7
    assert results[1]["fid"] == pytest.approx(results[0]["fid"], rel=1e-6)


def test_noise_reference_scores_seeded_gaussian_noise_beside_the_samples(tiny_run, tmp_path):
    """Issue 22, item 4: `noise_reference` records the FID of as many Gaussian-noise images
    (seeded, clipped to [-1, 1]) as samples, with the same extractor and reference, so a figure
    can say when samples score as noise; off (the paper), the record says null."""
    from ddae.fid import FeatureStatistics, frechet_distance, load_statistics, to_uint8
    from ddae.fid_networks import build_extractor

    checkpoint, train = tiny_run
    write_reference_statistics(train, tmp_path / "ref.npz", "random_conv", None, 32, "cpu", False)
    args = (tmp_path / "ref.npz", tmp_path / "f.json", tmp_path / "g.png")
    plain = sample_and_score(checkpoint, *args, SAMPLING, "random_conv", None, "cpu", False)
    noisy = sample_and_score(
        checkpoint, *args, {**SAMPLING, "noise_reference": True}, "random_conv", None, "cpu", False
    )
    assert plain["noise_fid"] is None and noisy["fid"] == plain["fid"]
    noise = torch.randn((5, 3, 16, 16), generator=torch.Generator().manual_seed(3))
    stats = FeatureStatistics()
    stats.update(build_extractor("random_conv")(to_uint8(noise.clamp(-1.0, 1.0))))
    reference = load_statistics(tmp_path / "ref.npz")
    expected = frechet_distance(stats.mean, stats.covariance, reference.mu, reference.sigma)
    assert noisy["noise_fid"] == pytest.approx(expected, rel=1e-6) and expected > 0
