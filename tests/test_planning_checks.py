"""Damaged inputs stop Snakemake while it plans, before it deletes good outputs (issue 23,
item 6): every checkpoint a job reads is verified (content hash, cached by size and mtime),
every dataset split a job reads must end in its zip directory (ddae.planning_checks)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ddae.checkpoints
from ddae import planning_checks
from ddae.checkpoints import save_checkpoint
from ddae.planning_checks import DamagedInputError, verified_input

REPO = Path(__file__).resolve().parents[1]
MARKER = torch.arange(4096, dtype=torch.float32) * 0.25  # tensor bytes we can find in a file
RUN = "results/digits/digits_ddpm"


def write_checkpoint(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"run": {"network": {}, "framework": {}}, "ema": {"marker": MARKER}}, path)


def flip_a_tensor_byte(path: Path) -> None:
    """One changed byte inside a tensor: the zip directory stays whole (torch does not check
    its CRCs), only the content hash can tell."""
    data = bytearray(path.read_bytes())
    at = data.find(MARKER.numpy().tobytes())
    assert at > 0
    data[at + 1000] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A cache file of this test only, and a count of the checkpoints hashed."""
    monkeypatch.setattr(planning_checks, "_verified", {})
    hashed = []
    verify = ddae.checkpoints.verify_checkpoint
    monkeypatch.setattr(
        ddae.checkpoints, "verify_checkpoint", lambda path: (hashed.append(path), verify(path))
    )
    return tmp_path / "state" / "verified.json", hashed


def test_a_verified_checkpoint_is_not_hashed_again_until_it_changes(tmp_path, fresh_cache):
    cache, hashed = fresh_cache
    path = tmp_path / "epoch1.pt"
    write_checkpoint(path)
    assert verified_input(str(path), cache) == str(path)
    assert verified_input(str(path), cache) == str(path)
    assert hashed == [str(path)]  # the second plan only stats the file
    assert json.loads(cache.read_text()) == {
        str(path): [path.stat().st_size, path.stat().st_mtime_ns]
    }
    planning_checks._verified.clear()  # a new Snakemake process reads the cache file
    verified_input(str(path), cache)
    assert len(hashed) == 1
    flip_a_tensor_byte(path)  # a new mtime: verified again, and refused
    with pytest.raises(DamagedInputError, match=rf"{path}: content hash mismatch"):
        verified_input(str(path), cache)
    assert len(hashed) == 2


def test_a_truncated_checkpoint_or_split_is_refused_and_a_missing_one_left_to_snakemake(
    tmp_path, fresh_cache
):
    cache, _ = fresh_cache
    path = tmp_path / "epoch2.pt"
    write_checkpoint(path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DamagedInputError, match=rf"{path}: truncated or corrupt.*before deleting"):
        verified_input(str(path), cache)
    split = tmp_path / "train.npz"
    np.savez(split, labels=np.zeros(4))
    assert verified_input(str(split), cache) == str(split)
    split.write_bytes(split.read_bytes()[:-30])
    with pytest.raises(DamagedInputError, match=rf"{split}: truncated or corrupt"):
        verified_input(str(split), cache)
    assert verified_input(str(tmp_path / "epoch3.pt"), cache) == str(tmp_path / "epoch3.pt")
    assert not cache.exists()  # nothing verified, nothing remembered


# --- the workflow: a tiny pretraining chain (tests/smoke's digits_ddpm, epochs [1, 2]) --------


def smoke_workdir(tmp_path: Path) -> Path:
    """The smoke config with its digits splits and both checkpoints of digits_ddpm in place,
    each file older than what is made from it."""
    shutil.copy(REPO / "tests/smoke/config.yaml", tmp_path / "config.yaml")
    data = tmp_path / "resources/data/digits"
    data.mkdir(parents=True)
    for split in ("train", "test"):
        np.savez(data / f"{split}.npz", labels=np.zeros(4))
    for epoch in (1, 2):
        write_checkpoint(tmp_path / RUN / f"checkpoints/epoch{epoch}.pt")
    return tmp_path


def age(paths: list[Path]) -> None:
    """mtimes in the order given, a minute apart, all in the past."""
    for minutes, path in enumerate(paths):
        stamp = 1_700_000_000 + 60 * minutes
        os.utime(path, (stamp, stamp))


def snakemake(workdir: Path, *targets: str) -> subprocess.CompletedProcess:
    """Reruns decided by mtimes only: these files have no Snakemake metadata (the code trigger
    would rebuild them all)."""
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    return subprocess.run(
        [*command, "-d", str(workdir), "--cores", "1", *targets, "--rerun-triggers", "mtime"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_flipped_byte_in_epoch1_stops_the_plan_and_keeps_epoch2(tmp_path):
    """epoch1.pt with a changed byte and a new mtime: Snakemake would retrain epoch 2, deleting
    the good epoch2.pt before the job finds the hash mismatch."""
    workdir = smoke_workdir(tmp_path)
    epoch1, epoch2 = (workdir / RUN / f"checkpoints/epoch{e}.pt" for e in (1, 2))
    age([*workdir.glob("resources/data/digits/*.npz"), epoch1, epoch2])
    kept = epoch2.read_bytes()
    target = str(epoch2.relative_to(workdir))
    result = snakemake(workdir, "-n", target)  # intact: nothing to do, epoch1.pt remembered
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    flip_a_tensor_byte(epoch1)  # written now: newer than epoch2.pt
    result = snakemake(workdir, target)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{RUN}/checkpoints/epoch1.pt: content hash mismatch" in output, output[-3000:]
    assert "before deleting any output" in output
    assert epoch2.read_bytes() == kept
    # remembered by the first plan in Snakemake's state folder, not in results/: the new mtime
    # made the second plan hash it again
    cache = json.loads((workdir / ".snakemake/ddae/verified_checkpoints.json").read_text())
    assert [Path(path).resolve() for path in cache] == [epoch1.resolve()]


def test_a_truncated_final_checkpoint_stops_the_plan_and_keeps_its_results(tmp_path):
    """A truncated epoch2.pt (the final checkpoint): its FID and per-t grid jobs would rerun,
    deleting their results before failing on it."""
    workdir = smoke_workdir(tmp_path)
    epoch1, epoch2 = (workdir / RUN / f"checkpoints/epoch{e}.pt" for e in (1, 2))
    results = {  # the FID job's sample grid (its JSON is left out: the report checks those)
        "fid": workdir / RUN / "fid/epoch2.png",
        "grid": workdir / RUN / "grid_timesteps/epoch2/t1.json",
        "reference": workdir / "results/digits/fid/reference.npz",
    }
    for path in results.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{path.name}: a result of an earlier run\n")
    splits = list(workdir.glob("resources/data/digits/*.npz"))
    age([*splits, results["reference"], epoch1, epoch2, results["fid"], results["grid"]])
    contents = {name: path.read_bytes() for name, path in results.items()}
    epoch2.write_bytes(epoch2.read_bytes()[:-100])  # truncated, and newer than its results
    result = snakemake(workdir, f"{RUN}/fid/epoch2.json", f"{RUN}/grid_timesteps/epoch2/t1.json")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{RUN}/checkpoints/epoch2.pt: truncated or corrupt" in output, output[-3000:]
    assert {name: path.read_bytes() for name, path in results.items()} == contents
