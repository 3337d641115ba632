"""After a kill -9 of Snakemake, a plain rerun goes on (issue 15, item 5): the default workflow
profile reruns the jobs left incomplete (they resume from their partial state)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_default_profile_reruns_incomplete_jobs(tmp_path):
    shutil.copy(REPO / "tests/smoke/config.yaml", tmp_path / "config.yaml")
    (tmp_path / "results").mkdir()
    for name in ("table5.csv", "table5.md"):
        (tmp_path / "results" / name).write_text("half-written by a killed job\n")
    # what Snakemake records for a job that was running when it was killed
    marker = base64.urlsafe_b64encode(b"results/table5.csv").decode()
    (tmp_path / ".snakemake/incomplete").mkdir(parents=True)
    (tmp_path / ".snakemake/incomplete" / marker).touch()
    snakefile = str(REPO / "Snakefile")
    command = [sys.executable, "-m", "snakemake", "-s", snakefile, "-d", str(tmp_path)]
    result = subprocess.run(
        [*command, "-n", "results/table5.csv"], cwd=REPO, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "IncompleteFilesException" not in output
    assert "table5" in output and "Nothing to be done" not in output


def test_truncated_input_stops_before_its_downstream_output_is_deleted(tmp_path):
    """A truncated epoch1.pt (newer than epoch2.pt, so Snakemake would retrain epoch 2) stops
    the run while Snakemake plans, naming the file; the valid epoch2.pt is kept."""
    shutil.copy(REPO / "tests/smoke/config.yaml", tmp_path / "config.yaml")
    checkpoints = tmp_path / "results/digits/digits_ddpm/checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "epoch2.pt").write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip
    (checkpoints / "epoch1.pt").write_bytes(b"PK\x03\x04 truncated")
    snakefile = str(REPO / "Snakefile")
    command = [sys.executable, "-m", "snakemake", "-s", snakefile, "-d", str(tmp_path)]
    target = "results/digits/digits_ddpm/checkpoints/epoch2.pt"
    result = subprocess.run(
        [*command, "--cores", "1", target], cwd=REPO, capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "epoch1.pt: truncated or corrupt" in output, output[-3000:]
    assert (checkpoints / "epoch2.pt").read_bytes().startswith(b"PK\x05\x06")
