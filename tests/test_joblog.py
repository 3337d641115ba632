"""Job logs: progress lines with rate and ETA at least every minute, and one closing result line
for the feature cache, the grid search and the linear probe (ddae.joblog.progress)."""

from __future__ import annotations

import logging
import re
import sys

from conftest import TINY_UNET, digits_subset, tiny_probe_run

from ddae.features import cache_features
from ddae.joblog import logging_to, progress
from ddae.probing import grid_search, linear_probe
from ddae.sources import ImageSource
from ddae.training import TrainOptions, train_to_epoch


def test_progress_logs_rate_and_eta_every_interval(caplog):
    ticks = iter(range(0, 10_000, 25))  # every item takes 25 s
    with caplog.at_level(logging.INFO, logger="ddae.progress"):
        items = list(progress(range(12), "train view 1/2", clock=lambda: next(ticks)))
    assert items == list(range(12))
    lines = [record.getMessage() for record in caplog.records]
    # a line after items 3, 6, 9, 12 (>= 60 s apart: 75 s each), then the closing line
    assert lines[0] == "train view 1/2: 3/12 batches (25%), 0.04 batch/s, ETA 3m45s"
    assert len(lines) == 5 and lines[3].startswith("train view 1/2: 12/12 batches (100%)")
    assert lines[-1] == "train view 1/2: done, 12 batches in 5m00s (0.04 batch/s)"


def test_progress_disabled_logs_nothing(caplog):
    with caplog.at_level(logging.INFO):
        assert list(progress(iter("abc"), "x", enabled=False)) == ["a", "b", "c"]
    assert not caplog.records


RESULT = re.compile(r"^\d{4}-\d\d-\d\d [\d:,]+ INFO ddae\.(?!progress)[\w.]+: \S")


def last_line(path) -> str:
    return path.read_text().strip().splitlines()[-1]


def test_feature_grid_and_probe_jobs_log_progress_and_end_with_their_result(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)  # file descriptor 2, as in a job
    checkpoint, train, test = tiny_probe_run(tmp_path, train=64, test=32)
    features = {"views": 2, "batch_size": 32, "hflip": False}
    log = tmp_path / "cache.log"
    with logging_to(log):
        cache_features(checkpoint, ImageSource(train, test), 5, 100, features, tmp_path / "t5")
    text = log.read_text()
    assert "INFO ddae.progress: train view 2/2: done, 2 batches in" in text
    assert RESULT.match(last_line(log)) and "cached 4 layers at t = 5/100" in last_line(log)

    probe = {"epochs": 2, "lr": 1e-2, "batch_size": 32}
    log = tmp_path / "grid.log"
    with logging_to(log):
        grid_search([tmp_path / "t5"], probe, tmp_path / "grid.csv", tmp_path / "grid.json")
    assert "probes, epoch 2/2: done, 2 batches" in log.read_text()
    assert RESULT.match(last_line(log)) and "grid search of 4 probes: best layer" in last_line(log)

    log = tmp_path / "linear.log"
    with logging_to(log):
        linear_probe(
            checkpoint, ImageSource(train, test), 1, 5, 100, probe, tmp_path / "linear.json"
        )
    assert "epoch 2/2: done, 2 batches" in log.read_text()
    assert RESULT.match(last_line(log))
    assert re.search(r"linear probe at layer 1 \(.*\), t = 5/100: test accuracy", last_line(log))


def test_pretraining_log_ends_with_its_result(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)  # file descriptor 2, as in a job
    run = {
        "network": TINY_UNET,
        "framework": {"kind": "ddpm", "timesteps": 100},
        "training": {"batch_size": 32, "lr": 1e-3, "warmup_epochs": 1, "ema_decay": 0.9},
    }
    data = digits_subset(tmp_path / "train.npz", count=32)
    log = tmp_path / "pretrain.log"
    with logging_to(log):
        train_to_epoch(run, data, tmp_path / "epoch1.pt", 1, options=TrainOptions(device="cpu"))
    last = re.split(r"[\r\n]", log.read_text().strip())[-1]
    assert RESULT.match(last) and f"wrote {tmp_path / 'epoch1.pt'}: trained to epoch 1" in last
