"""Linear probes: learning, joint = one-at-a-time training, grid search and the final probe."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_probe_run

from ddae.configs import ConfigError, from_mapping
from ddae.features import cache_features
from ddae.layer_choice import resolve_layer_t
from ddae.probing.bank import fit_cached_probes, labelled_subset
from ddae.probing.grid_search import GRID_CSV_COLUMNS, grid_search
from ddae.probing.linear_probe import linear_probe
from ddae.probing.pixel_probe import pixel_probe
from ddae.settings.probes import LinearProbeConfig, ProbeConfig
from ddae.sources import ImageSource

pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic(num_train, num_test, dim, classes, views=2, separable=True, seed=0):
    """Features (1, K, N, D), labels; separable: class c has +8 on coordinate c (margin ≫ noise)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (num_train + num_test,), generator=generator)
    shape = (views, num_train + num_test, dim)
    features = torch.randn(shape, generator=generator)
    if separable:
        features[:, torch.arange(len(labels)), labels] += 8.0
    else:
        labels = labels[torch.randperm(len(labels), generator=generator)]
    train = features[None, :, :num_train].half()
    test = features[None, 0, num_train:].half()
    return train, labels[:num_train], test, labels[num_train:]


def test_separable_features_are_learnt_and_shuffled_labels_are_not():
    config = ProbeConfig(epochs=10, batch_size=32, lr=2e-2)
    train, y, test, y_test = synthetic(600, 400, 16, 10)
    fit = fit_cached_probes(train, y, test, y_test, [(0, 16)], [(1, 1)], 10, config, "cpu")
    assert fit.test_accuracy.item() >= 99.0
    assert fit.history[-1]["train_accuracy"][0] >= 99.0
    train, y, test, y_test = synthetic(600, 400, 16, 10, separable=False)
    fit = fit_cached_probes(train, y, test, y_test, [(0, 16)], [(1, 1)], 10, config, "cpu")
    assert fit.test_accuracy.item() < 20.0  # chance is 10 % (s.e. 1.5 % on 400 images)


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["f64", "f32"]
)
def test_joint_probes_match_probes_trained_one_at_a_time(dtype, tolerance):
    """Every probe's math is independent of the others: joint = alone up to float rounding.

    Tolerance: max |ΔW| ≤ 1e-12 in float64, ≤ 1e-5 in float32 after 3 epochs (the batched matmul
    sums the zero-padded columns in another order than a probe alone); same predictions.
    """
    slices = [(0, 5), (5, 8), (13, 3)]  # three layers of different widths, D_total = 16
    ts = [3, 7]
    trains, tests = [], []
    for g in range(len(ts)):
        train, y, test, y_test = synthetic(97, 50, 16, 4, views=3, seed=0)
        trains.append(train[0] * (g + 1))  # noise levels differ
        tests.append(test[0] * (g + 1))
    train, test = torch.stack(trains), torch.stack(tests)
    config = ProbeConfig(epochs=3, batch_size=32, lr=3e-3)  # 97 = 3·32 + 1: partial batch
    keys = [(t, k + 1) for t in ts for k in range(len(slices))]
    joint = fit_cached_probes(train, y, test, y_test, slices, keys, 4, config, "cpu", dtype)
    for g, t in enumerate(ts):
        for k, (offset, dim) in enumerate(slices):
            alone = fit_cached_probes(
                train[g : g + 1, ..., offset : offset + dim],
                y,
                test[g : g + 1, :, offset : offset + dim],
                y_test,
                [(0, dim)],
                [(t, k + 1)],
                4,
                config,
                "cpu",
                dtype,
            )
            p = g * len(slices) + k
            weight = joint.bank.weight.detach()[p]
            assert (weight[dim:] == 0).all()  # padding never moves
            diff = (weight[:dim] - alone.bank.weight.detach()[0]).abs().max().item()
            assert diff <= tolerance, (t, k, diff)
            bias = (joint.bank.bias.detach()[p] - alone.bank.bias.detach()[0]).abs().max()
            assert bias.item() <= tolerance
            assert joint.test_accuracy[p] == alone.test_accuracy[0]
            for ours, theirs in zip(joint.history, alone.history, strict=True):
                assert ours["train_loss"][p] == pytest.approx(theirs["train_loss"][0], abs=1e-5)


def test_lr_schedule_is_per_epoch_cosine_with_gpu_scaling():
    """linear.py: lr = lrate × #GPUs (128 per GPU), CosineAnnealingLR(T_max=epochs) per epoch."""
    config = ProbeConfig(epochs=10, lr=1e-3, batch_size=512)
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=4e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 10)
    for epoch in range(10):
        assert config.lr_at_epoch(epoch) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """An untrained tiny DDPM UNet checkpoint (T = 100) and 48 train / 20 test 8×8 digits."""
    return tiny_probe_run(tmp_path_factory.mktemp("probing"), 48, 20)


def test_grid_search_end_to_end(tiny_run, tmp_path):
    checkpoint, train, test = tiny_run
    features = {"views": 2, "batch_size": 24}
    dirs = [
        cache_features(
            checkpoint, ImageSource(train, test), t, 100, features, tmp_path / f"t{t}", "cpu", False
        )
        for t in (11, 1)
    ]
    probe = {"epochs": 2, "batch_size": 16, "resident_gib": 1e-9}  # one t per group
    record = grid_search(dirs, probe, tmp_path / "g.csv", tmp_path / "g.json", "cpu", False)
    with (tmp_path / "g.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == GRID_CSV_COLUMNS
    assert [(int(r["t"]), int(r["layer"])) for r in rows] == [
        (t, k) for t in (1, 11) for k in (1, 2, 3, 4)
    ]
    assert all(0 <= float(r["test_accuracy"]) <= 100 for r in rows)
    saved = json.loads((tmp_path / "g.json").read_text())
    assert saved == record
    best = max(rows, key=lambda r: float(r["test_accuracy"]))
    assert saved["test_accuracy"] == float(best["test_accuracy"])
    assert saved["checkpoint"] == str(checkpoint)
    assert saved["created_by"] == "ddae.probing.grid_search"
    assert saved["config"]["epochs"] == 2 and saved["steps"] == 100
    # The grouping of t directories changes nothing.
    again = grid_search(
        dirs, {**probe, "resident_gib": 1.0}, tmp_path / "h.csv", tmp_path / "h.json"
    )
    assert (tmp_path / "h.csv").read_text() == (tmp_path / "g.csv").read_text()
    assert resolve_layer_t([tmp_path / "g.json"], None, 100)[:2] == (again["layer"], again["t"])
    with pytest.raises(ConfigError, match="steps"):
        resolve_layer_t([tmp_path / "g.json"], None, 18)
    # without a grid: the config's fixed pair (Table 9), which needs both keys and the steps
    assert resolve_layer_t([], {"layer": 6, "t": 4}, 18) == (6, 4, 18)
    for fixed, steps in (({"layer": 6}, 18), (None, 18), ({"layer": 6, "t": 4}, None)):
        with pytest.raises(ConfigError):
            resolve_layer_t([], fixed, steps)


def test_linear_probe_end_to_end(tiny_run, tmp_path):
    checkpoint, train, test = tiny_run
    probe = {"epochs": 2, "batch_size": 16, "crop_padding": 2}
    record = linear_probe(
        checkpoint,
        ImageSource(train, test),
        3,
        11,
        100,
        probe,
        tmp_path / "l.json",
        tmp_path / "m.jsonl",
        "cpu",
        False,
    )
    saved = json.loads((tmp_path / "l.json").read_text())
    assert saved == record
    for key in (
        "test_accuracy",
        "layer",
        "layer_name",
        "t",
        "steps",
        "sigma",
        "epochs",
        "history",
        "checkpoint",
        "config",
        "created_by",
    ):
        assert key in saved
    assert saved["layer"] == 3 and saved["layer_name"] == "unet.up_blocks.1.resnets.0"
    assert saved["t"] == 11 and saved["epochs"] == 2 and len(saved["history"]) == 2
    assert saved["test_accuracy"] == saved["history"][-1]["test_accuracy"]
    assert saved["history"][0]["lr"] == pytest.approx(1e-3 * 16 / 128)
    metrics = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert metrics == saved["history"]
    with pytest.raises(ConfigError, match="layer"):
        linear_probe(checkpoint, ImageSource(train, test), 9, 11, 100, probe, tmp_path / "x.json")


def test_linear_probe_lbfgs_fits_every_epochs_views_at_once(tiny_run, tmp_path):
    """``solver: lbfgs`` (not in the paper): one full-batch fit on the 2 epochs' views of the 48
    training images, recorded as one history entry without a learning rate."""
    checkpoint, train, test = tiny_run
    probe = {"epochs": 2, "batch_size": 16, "crop_padding": 2, "solver": "lbfgs"}
    source, out = ImageSource(train, test), tmp_path / "l.json"
    metrics = tmp_path / "m.jsonl"
    record = linear_probe(checkpoint, source, 3, 11, 100, probe, out, metrics, progress=False)
    (entry,) = record["history"]
    assert entry["epoch"] == 2 and entry["lr"] is None
    hits = entry["train_accuracy"] * 96 / 100  # over both views: 96 rows
    assert hits == pytest.approx(round(hits)) and entry["train_loss"] < 1.0  # Adam: 2.30 = ln 10
    assert record["test_accuracy"] == entry["test_accuracy"]
    assert record["config"]["solver"] == "lbfgs" and record["config"]["lbfgs_iterations"] == 100
    assert json.loads(metrics.read_text()) == entry


def test_solver_and_its_iterations_are_checked_naming_the_key():
    where = "pretraining.digits_ddpm.evaluation.linear_probe"
    with pytest.raises(
        ConfigError, match=rf"^{where}\.solver: 'sgd' is not one of \['adam', 'lbfgs'\]"
    ):
        from_mapping(LinearProbeConfig, {"solver": "sgd"}, where)
    with pytest.raises(ConfigError, match=rf"^{where}: lbfgs_iterations must be >= 1, got 0"):
        from_mapping(LinearProbeConfig, {"solver": "lbfgs", "lbfgs_iterations": 0}, where)
    assert LinearProbeConfig().solver == "adam"  # Table 6


def test_standardised_probe_converges_on_features_of_small_spread():
    """Features scaled by 1e-3 (a briefly trained network's spread): the paper's plain head
    barely moves in 10 epochs; with `standardize` (BatchNorm without affine) it separates them."""
    train, y, test, y_test = synthetic(600, 400, 16, 10)
    train, test = train * 1e-3, test * 1e-3
    plain = ProbeConfig(epochs=10, batch_size=32, lr=2e-2)
    fit = fit_cached_probes(train, y, test, y_test, [(0, 16)], [(1, 1)], 10, plain, "cpu")
    assert fit.test_accuracy.item() < 60.0
    standard = ProbeConfig(epochs=10, batch_size=32, lr=2e-2, standardize=True)
    fit = fit_cached_probes(train, y, test, y_test, [(0, 16)], [(1, 1)], 10, standard, "cpu")
    assert fit.test_accuracy.item() >= 99.0


def test_labels_per_class_subset_is_balanced_seeded_and_used():
    labels = torch.arange(100) % 10
    subset = labelled_subset(labels, 3, seed=0)
    assert len(subset) == 30 and torch.bincount(labels[subset]).tolist() == [3] * 10
    assert torch.equal(subset, labelled_subset(labels, 3, seed=0))
    assert not torch.equal(subset, labelled_subset(labels, 3, seed=1))
    assert torch.equal(labelled_subset(labels, None, seed=0), torch.arange(100))
    with pytest.raises(ConfigError, match="labels_per_class: 11"):
        labelled_subset(labels, 11, seed=0)
    train, y, test, y_test = synthetic(600, 400, 16, 10)
    config = ProbeConfig(epochs=3, batch_size=32, lr=2e-2, labels_per_class=2)
    fit = fit_cached_probes(train, y, test, y_test, [(0, 16)], [(1, 1)], 10, config, "cpu")
    assert fit.history[0]["train_accuracy"][0] in {5.0 * k for k in range(21)}  # 20 images


def test_pixel_probe_reads_raw_digits(tmp_path):
    _, train, test = tiny_probe_run(tmp_path, 200, 100)
    config = {"epochs": 30, "lr": 3e-2, "batch_size": 128, "standardize": True}
    record = pixel_probe(train, test, config, tmp_path / "pixels.json")
    assert json.loads((tmp_path / "pixels.json").read_text()) == record
    assert record["num_classes"] == 10 and record["labelled_train_images"] == 200
    assert record["test_accuracy"] >= 70.0  # digits are nearly linearly separable in pixels
    few = pixel_probe(train, test, {**config, "labels_per_class": 1}, tmp_path / "few.json")
    assert few["labelled_train_images"] == 10 and few["test_accuracy"] < record["test_accuracy"]


@pytest.mark.cuda
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float64, 1e-12), (torch.float32, 1e-5)], ids=["f64", "f32"]
)
def test_cuda_joint_probes_match_probes_trained_one_at_a_time(dtype, tolerance):
    """The joint = alone bound of `test_joint_probes_match_probes_trained_one_at_a_time` with the
    batched matmuls on CUDA (cuBLAS, TF32 off): per probe weights, bias and predictions."""
    slices = [(0, 5), (5, 8), (13, 3)]
    train, y, test, y_test = synthetic(97, 50, 16, 4, views=3, seed=0)
    config = ProbeConfig(epochs=3, batch_size=32, lr=3e-3)
    keys = [(3, k + 1) for k in range(len(slices))]
    joint = fit_cached_probes(train, y, test, y_test, slices, keys, 4, config, "cuda", dtype)
    for k, (offset, dim) in enumerate(slices):
        alone = fit_cached_probes(
            train[..., offset : offset + dim], y, test[..., offset : offset + dim], y_test,
            [(0, dim)], [keys[k]], 4, config, "cuda", dtype,
        )  # fmt: skip
        weight = joint.bank.weight.detach()[k]
        assert weight.is_cuda and (weight[dim:] == 0).all()
        assert (weight[:dim] - alone.bank.weight.detach()[0]).abs().max().item() <= tolerance
        bias = (joint.bank.bias.detach()[k] - alone.bank.bias.detach()[0]).abs().max()
        assert bias.item() <= tolerance
        assert joint.test_accuracy[k] == alone.test_accuracy[0]
