"""Job logs: progress lines with rate and ETA at least every minute, and one closing result line
for the feature cache, the grid search and the linear probe (ddae.joblog.progress); earlier
attempts' logs kept, an orphan's included (ddae.joblog.keep_earlier_logs)."""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import TINY_UNET, digits_subset, tiny_probe_run

from ddae.features import cache_features
from ddae.joblog import KEPT_LOGS, job_device, logging_to, progress
from ddae.probing.grid_search import grid_search
from ddae.probing.linear_probe import linear_probe
from ddae.sources import ImageSource
from ddae.training import TrainOptions
from ddae.training_resume import train_to_epoch


def test_a_job_runs_on_cuda_exactly_when_its_rule_gives_it_a_gpu():
    devices = [job_device(gpus) for gpus in (0, 1, 4, "0", "2")]  # resources: gpu=, int or text
    assert devices == ["cpu", "cuda", "cuda", "cpu", "cuda"]


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


# a job that logs a line, waits for a line on stdin (as an orphan of a killed Snakemake trains on),
# then logs another and ends
JOB = textwrap.dedent(
    """
    import sys
    from ddae.joblog import logging_to

    with logging_to(sys.argv[1]):
        print(sys.argv[2], "started", flush=True)
        sys.stdin.readline()
        print(sys.argv[2], "went on", flush=True)
    """
)


def start_job(log, name: str) -> subprocess.Popen:
    """The job, once its first line is in its log."""
    job = subprocess.Popen([sys.executable, "-c", JOB, str(log), name], stdin=subprocess.PIPE)
    for _ in range(600):
        if log.exists() and f"{name} started" in log.read_text():
            return job
        time.sleep(0.05)
    job.kill()
    raise AssertionError(f"{name} wrote no line to {log} in 30 s")


def test_a_rerun_keeps_the_orphans_log_which_it_writes_on_and_starts_a_clean_one(tmp_path):
    log = tmp_path / "logs" / "pretrain_epoch2.log"
    orphan = start_job(log, "orphan")
    try:
        log.unlink()  # what Snakemake does to a job's log before it runs the job again
        rerun = start_job(log, "rerun")
        orphan.communicate(b"\n", timeout=30)  # the orphan writes on after the rerun started
        rerun.communicate(b"\n", timeout=30)
    finally:
        orphan.kill()
    assert orphan.returncode == 0 and rerun.returncode == 0
    assert re.findall(r"(?m)^\w+ .*$", (tmp_path / "logs/pretrain_epoch2.log.1").read_text()) == [
        "orphan started",
        "orphan went on",
    ]
    text = log.read_text()
    assert "orphan started" not in text and "orphan went on" not in text
    assert f"INFO ddae.joblog: an earlier attempt's log is kept as {log}.1" in text
    assert text.endswith("rerun started\nrerun went on\n")
    assert sorted(path.name for path in log.parent.iterdir()) == [
        ".pretrain_epoch2.log.current",
        "pretrain_epoch2.log",
        "pretrain_epoch2.log.1",
    ]


def test_earlier_attempts_logs_rotate_and_at_most_kept_logs_stay(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", sys.__stderr__)  # file descriptor 2, as in a job
    log = tmp_path / "probe.log"
    for attempt in range(1, KEPT_LOGS + 3):
        if attempt % 2:
            log.unlink(missing_ok=True)  # by Snakemake; the others as a job run by hand
        failing = pytest.raises(RuntimeError) if attempt == 3 else contextlib.nullcontext()
        with failing, logging_to(log):
            logging.getLogger("ddae.job").info("attempt %d", attempt)
            if attempt == 3:
                raise RuntimeError("attempt 3 fails")
    assert "attempt 7" in log.read_text() and "attempt 6" not in log.read_text()
    for generation in range(1, KEPT_LOGS + 1):
        kept = log.with_name(f"probe.log.{generation}").read_text()
        assert re.findall(r"INFO ddae.job: attempt (\d)", kept) == [str(7 - generation)]
    assert "attempt 3 fails" in log.with_name("probe.log.4").read_text()
    assert not log.with_name(f"probe.log.{KEPT_LOGS + 1}").exists()
