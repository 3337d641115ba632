"""Cluster execution: walltime-sized segments, the SLURM profile, and a real SLURM cluster.

The cluster tests start a throw-away single-node SLURM (tests/slurm/minicluster.sh: Debian's
slurm-wlm + munge, a fake 4-GPU node, everything in a temporary directory) and run pretraining
jobs of a tiny run through ``--profile profiles/slurm`` plus the test overlay
tests/slurm/profile. They need root (and apt-get where slurm-wlm is not installed yet) and are
skipped otherwise. The three cluster workflows run at the same time, since most of their time
is spent waiting for the SLURM plugin's status checks:

- a run split into segments gives checkpoints bitwise equal to a local unsplit run, and the
  same linear probe (an evaluation rule) results;
- a job cancelled (``scancel``) after it saved its partial state is retried by the profile's
  ``retries`` and continues from that state, training no step twice;
- a job that fails on an error in the job (a corrupt dataset file) is submitted
  ``retries + 1`` times, no more, and the error is reported.

The fixtures end every process they started, the SLURM jobs' included, and fail if one survives
(tests/leftover_processes.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from leftover_processes import end_processes, processes_of

from ddae.checkpoints import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
SLURM_PROFILE = REPO / "profiles" / "slurm"
TEST_PROFILE = REPO / "tests" / "slurm" / "profile"
MINICLUSTER = REPO / "tests" / "slurm" / "minicluster.sh"
PROFILE = yaml.safe_load((SLURM_PROFILE / "config.yaml").read_text())

RUN = "tiny"
STEPS_PER_EPOCH = math.ceil(1437 / 64)  # digits training split, batch 64, last batch kept
CLUSTER_TIMEOUT = 420  # seconds for one cluster workflow; nothing waits longer


def tiny_config(**run) -> dict:
    """One tiny DDPM++ run on 8x8 digits (seconds per epoch), epochs 2 and 4, linear probe."""
    spec = {
        "dataset": "digits",
        "epochs": [2, 4],
        "gpus": 0,
        "minutes_per_epoch": 0.1,
        "network": {
            "arch": "ddpmpp",
            "resolution": 8,
            "model_channels": 8,
            "channel_mult": [1],
            "num_blocks": 1,
            "attn_resolutions": [],
            "dropout": 0.1,  # exercises the saved dropout RNG streams
        },
        "framework": {"kind": "ddpm", "timesteps": 1000},
        "training": {
            "batch_size": 64,
            "lr": 1.0e-3,
            "warmup_epochs": 1,
            "ema_decay": 0.99,
            "hflip": False,
            "seed": 0,
        },
        "evaluation": {  # the linear probe at a fixed (layer, t), as the smoke config's runs
            "checkpoints": "final",
            "steps": 1000,
            "layer_t": {"layer": 1, "t": 11},
            "gpus": 0,
            "linear_probe": {"epochs": 2, "batch_size": 128, "hflip": False},
        },
    }
    return {"datasets": {"digits": {"resolution": 8}}, "pretraining": {RUN: {**spec, **run}}}


def target(epoch: int) -> str:
    """A checkpoint as a Snakemake target (relative to the workdir)."""
    return f"results/digits/{RUN}/checkpoints/epoch{epoch}.pt"


PROBE = f"results/digits/{RUN}/linear/epoch2.json"


def checkpoint(workdir: Path, epoch: int) -> Path:
    return workdir / target(epoch)


def new_workdir(path: Path, config: dict, data_from: Path | None = None) -> Path:
    """A workdir holding `config` (and the prepared dataset of another workdir, if given)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if data_from is not None:
        shutil.copytree(data_from / "resources", path / "resources")
    return path


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "-d", str(workdir), *args]


def run_local(workdir: Path, *args: str) -> str:
    result = subprocess.run(
        snakemake_command(workdir, *args), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"snakemake {' '.join(args)} failed:\n{output[-5000:]}"
    return output


def planned(output: str) -> Counter:
    """Jobs per rule in Snakemake's (dry-)run output."""
    return Counter(re.findall(r"^(?:local)?rule (\w+):", output, re.MULTILINE))


def assert_same_training_state(a: Path, b: Path) -> None:
    """Two checkpoints hold bitwise equal weights, EMA, optimizer and generator states."""
    one, two = load_checkpoint(a), load_checkpoint(b)
    assert (one["epoch"], one["step"]) == (two["epoch"], two["step"])
    assert torch.equal(one["generator"], two["generator"])
    for part in ("model", "ema"):
        assert one[part].keys() == two[part].keys()
        for name, value in one[part].items():
            assert torch.equal(value, two[part][name]), f"{part}.{name} differs: {a} vs {b}"
    for index, state in one["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, two["optimizer"]["state"][index][key]), (index, key)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny run trained locally, unsplit (epochs 0 -> 2, 2 -> 4), and probed at epoch 2."""
    workdir = new_workdir(tmp_path_factory.mktemp("reference"), tiny_config())
    run_local(workdir, "--cores", "2", target(4), PROBE)
    return workdir


# --- a real SLURM cluster ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node SLURM; yields the environment that reaches it. Stopped by PID."""
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd needs root")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and there is no apt-get to install slurm-wlm")
    pytest.importorskip("snakemake_executor_plugin_slurm")
    installed = subprocess.run(
        ["timeout", "900", str(MINICLUSTER), "install"], capture_output=True, text=True
    )
    if installed.returncode != 0:
        pytest.skip(f"cannot install slurm-wlm and munge: {installed.stderr[-1500:]}")
    directory = tmp_path_factory.mktemp("slurm")
    env = {
        **os.environ,
        "SLURMCTLD_PORT": str(free_port()),
        "SLURMD_PORT": str(free_port()),
        "SLURM_CONF": str(directory / "slurm.conf"),
        "PATH": os.pathsep.join(
            [str(directory / "bin"), str(Path(sys.executable).parent), os.environ["PATH"]]
        ),
        "HF_HUB_OFFLINE": "1",
    }
    try:
        started = subprocess.run(
            ["timeout", "120", str(MINICLUSTER), "start", str(directory)],
            capture_output=True,
            text=True,
            env=env,
        )
        assert started.returncode == 0, started.stdout + started.stderr + logs_of(directory)
        yield env
    finally:
        stop_cluster(directory, env)
        # whatever the daemons and jobs left: every process started with this cluster's env
        end_processes(directory)


def logs_of(directory: Path) -> str:
    return "".join(f"\n== {p}\n{p.read_text()[-2000:]}" for p in sorted(directory.glob("*.log")))


def stop_cluster(directory: Path, env: dict) -> None:
    """Stop the daemons the fixture started, by the PIDs they recorded (also after errors)."""
    subprocess.run(["timeout", "120", str(MINICLUSTER), "stop", str(directory)], env=env)
    for pid_file, daemon in [
        ("slurmd.pid", "slurmd"),
        ("slurmctld.pid", "slurmctld"),
        ("munge/munged.pid", "munged"),
    ]:  # left if the script failed
        path = directory / pid_file
        pid = path.read_text().strip() if path.exists() else ""
        command = Path(f"/proc/{pid}/cmdline")
        with contextlib.suppress(OSError):
            if (
                pid.isdigit()
                and daemon in command.read_text()
                and str(directory) in command.read_text()
            ):
                os.kill(int(pid), signal.SIGKILL)


def on_cluster(workdir: Path, env: dict, *targets: str) -> subprocess.Popen:
    """Start snakemake on the cluster with the real profile plus the test overlay."""
    command = snakemake_command(
        workdir,
        "--profile",
        str(SLURM_PROFILE),
        "--workflow-profile",
        str(TEST_PROFILE),
        *targets,
    )
    return subprocess.Popen(
        ["timeout", "-k", "10", str(CLUSTER_TIMEOUT), *command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def squeue(env: dict, *args: str) -> str:
    return subprocess.run(
        ["timeout", "10", "squeue", "-h", *args], env=env, capture_output=True, text=True
    ).stdout


def cancel_after_partial_state(workdir: Path, env: dict, process: subprocess.Popen) -> dict:
    """Wait for the job in `workdir` to save its partial state, then scancel it."""
    partial = workdir / f"results/digits/{RUN}/partial/partial.pt"
    deadline = time.monotonic() + CLUSTER_TIMEOUT
    while not partial.exists():
        assert process.poll() is None, "the workflow ended before the job saved partial state"
        assert time.monotonic() < deadline, "no partial state appeared"
        time.sleep(0.1)
    jobs = [line.split() for line in squeue(env, "-o", "%i %Z").splitlines()]
    ids = [job_id for job_id, directory in jobs if Path(directory) == workdir]
    assert len(ids) == 1, f"expected one running job in {workdir}: {jobs}"
    step = load_checkpoint(partial)["step"]  # the job may save a later one before it stops
    subprocess.run(["timeout", "10", "scancel", ids[0]], env=env, check=True)
    return {"job": ids[0], "step": step}


def write_corrupt_npz(path: Path) -> None:
    """A dataset archive whose image bytes are damaged but whose zip directory is intact: it
    passes the planning-time truncation check (`ddae.planning_checks`) and fails only
    when the job reads it (CRC mismatch), so the job itself fails on the cluster."""
    images = np.zeros((4, 1, 16, 16), dtype=np.uint8)
    np.savez(path, images=images, labels=np.zeros(4, dtype=np.int64), classes=np.array(["0"]))
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"images.npy") + 400] ^= 0xFF  # inside the image array's bytes
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def cluster_runs(cluster, request, tmp_path_factory):
    """Three workflows on the cluster at once: failing, segmented, cancelled mid-job.

    The failing one (four attempts, most of the time) starts first, before the local reference
    run that the other two compare with.
    """
    base = tmp_path_factory.mktemp("cluster")
    failing = new_workdir(base / "failing", tiny_config())
    data = failing / "resources/data/digits"
    data.mkdir(parents=True)
    for split in ("train", "test"):  # corrupt dataset files: the job raises when it loads them
        write_corrupt_npz(data / f"{split}.npz")
    began = time.monotonic()
    processes = {"failing": on_cluster(failing, cluster, target(2))}
    try:
        reference = request.getfixturevalue("reference")
        segmented = new_workdir(base / "segmented", tiny_config(segment_epochs=1), reference)
        cancelled = new_workdir(base / "cancelled", tiny_config(snapshot_minutes=0), reference)
        checkpoint(cancelled, 2).parent.mkdir(parents=True)
        shutil.copy(checkpoint(reference, 2), checkpoint(cancelled, 2))  # the job: epochs 2 -> 4
        processes["segmented"] = on_cluster(segmented, cluster, PROBE)
        processes["cancelled"] = on_cluster(cancelled, cluster, target(4))
        cancel = cancel_after_partial_state(cancelled, cluster, processes["cancelled"])
    except BaseException:
        for process in processes.values():
            process.terminate()  # snakemake cancels its jobs
        raise
    finally:
        outputs = {name: p.communicate()[0] for name, p in processes.items()}
    yield {
        "workdirs": {"segmented": segmented, "cancelled": cancelled, "failing": failing},
        "returncodes": {name: p.returncode for name, p in processes.items()},
        "outputs": outputs,
        "cancel": cancel,
        "seconds": time.monotonic() - began,
        "leftovers": end_processes(base),  # a cancelled job's Snakemake can outlive scancel
    }
    end_processes(base)  # jobs that started after the check above


def cluster_output(runs: dict, name: str, succeeds: bool = True) -> str:
    output, code = runs["outputs"][name], runs["returncodes"][name]
    assert code not in (124, 137), f"{name} timed out:\n{output[-6000:]}"
    assert (code == 0) == succeeds, f"{name}: exit status {code}\n{output[-6000:]}"
    return output


def submissions(output: str) -> list[str]:
    return re.findall(r"has been submitted with SLURM jobid (\d+)", output)


def test_cluster_run_equals_local_run(cluster_runs, reference):
    output = cluster_output(cluster_runs, "segmented")
    workdir = cluster_runs["workdirs"]["segmented"]
    # segment epoch 1, checkpoint epoch 2, linear probe
    assert len(submissions(output)) == 3, output[-4000:]
    assert_same_training_state(checkpoint(workdir, 2), checkpoint(reference, 2))
    probe = json.loads((workdir / PROBE).read_text())
    assert probe == json.loads((reference / PROBE).read_text())
    slurm_logs = list((workdir / ".snakemake/slurm_logs").rglob("*.log"))
    assert {p.parent.parent.name for p in slurm_logs} == {
        "rule_pretrain",
        "rule_pretrain_segment",
        "rule_linear_probe",
    }


def test_cancelled_job_resumes_from_its_partial_state(cluster_runs, reference):
    output = cluster_output(cluster_runs, "cancelled")
    workdir = cluster_runs["workdirs"]["cancelled"]
    cancel = cluster_runs["cancel"]
    jobs = submissions(output)
    assert len(jobs) == 2 and jobs[0] == cancel["job"], output[-4000:]
    assert f"SLURM-job '{cancel['job']}' failed, SLURM status is: 'CANCELLED'" in output
    assert PROFILE["retries"] >= 1
    # the retry continued from the partial state and trained no step twice
    log = (workdir / f"logs/digits/{RUN}/pretrain_epoch4.log").read_text()
    resumed = re.findall(r"resuming from (\S+) at epoch \d+ step (\d+)", log)
    # from the last partial state the cancelled job saved: the one seen before the scancel, or a
    # later one written while the cancellation reached it (snapshots here follow every step)
    assert resumed[-1][0] == f"results/digits/{RUN}/partial/partial.pt"
    assert cancel["step"] <= int(resumed[-1][1]) < 4 * STEPS_PER_EPOCH
    assert cancel["step"] > 2 * STEPS_PER_EPOCH
    metrics = (workdir / f"results/digits/{RUN}/metrics.jsonl").read_text().splitlines()
    steps = [json.loads(line)["step"] for line in metrics]
    assert steps == [3 * STEPS_PER_EPOCH, 4 * STEPS_PER_EPOCH], steps
    assert not (workdir / f"results/digits/{RUN}/partial/partial.pt").exists()
    assert_same_training_state(checkpoint(workdir, 4), checkpoint(reference, 4))


def test_the_workflows_leave_no_process_behind(cluster_runs):
    """Every process of the three workflows ended: the cancelled job's Snakemake was found idle
    25 minutes after the suite, reparented to init (issue 23, item 7)."""
    base = cluster_runs["workdirs"]["cancelled"].parent
    assert processes_of(base) == {}
    if cluster_runs["leftovers"]:
        print(f"ended after the workflows: {cluster_runs['leftovers']}")


def test_end_processes_ends_an_orphan_working_in_the_directory(tmp_path):
    """A daemonised process (reparented to init, as the cancelled job's Snakemake was) that
    works in the directory is found and ended; one that ignores SIGTERM gets SIGKILL."""
    orphan = "trap '' TERM; while :; do sleep 0.1; done"
    parent = subprocess.run(
        ["sh", "-c", f'setsid sh -c "{orphan}" </dev/null >/dev/null 2>&1 & echo $!'],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    pid = int(parent.stdout)
    assert pid in processes_of(tmp_path) and pid not in processes_of(tmp_path / "elsewhere")
    ended = end_processes(tmp_path, grace_s=0.5)
    assert pid in ended and "trap" in ended[pid]  # with its sleep, maybe
    assert processes_of(tmp_path) == {}


def test_failing_job_is_retried_a_bounded_number_of_times(cluster_runs):
    output = cluster_output(cluster_runs, "failing", succeeds=False)
    workdir = cluster_runs["workdirs"]["failing"]
    assert len(submissions(output)) == PROFILE["retries"] + 1, output[-4000:]
    assert "Error in rule pretrain" in output
    assert not checkpoint(workdir, 2).exists()
    log = (workdir / f"logs/digits/{RUN}/pretrain_epoch2.log").read_text()
    assert "corrupt or truncated dataset file" in log
    print(f"cluster workflows took {cluster_runs['seconds']:.0f} s")


# --- walltime-sized segments (no cluster needed) ------------------------------------------------


def test_segments_give_the_unsplit_checkpoint(reference, tmp_path):
    workdir = new_workdir(tmp_path, tiny_config(segment_epochs=1), data_from=reference)
    output = run_local(workdir, "--cores", "2", target(2))
    assert planned(output) == Counter({"pretrain_segment": 1, "pretrain": 1}), output[-3000:]
    assert_same_training_state(checkpoint(workdir, 2), checkpoint(reference, 2))
    log = (workdir / f"logs/digits/{RUN}/pretrain_epoch2.log").read_text()
    segment = f"results/digits/{RUN}/segments/epoch1.pt"
    assert f"resuming from {segment} at epoch 1 step {STEPS_PER_EPOCH}" in log
    # the segment is a temporary link of the chain, not a result
    assert not list((workdir / f"results/digits/{RUN}/segments").glob("*.pt"))
    # scheduling values are not params: changing them reruns nothing
    config = tiny_config(segment_epochs=1, snapshot_minutes=1, minutes_per_epoch=2.0)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert "Nothing to be done" in run_local(workdir, "-n", target(2))


def test_segments_plan_walltime_sized_jobs(tmp_path):
    """Paper scale: every job of a segmented run spans at most segment_epochs epochs."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    trained = {n: r for n, r in config["pretraining"].items() if "source" not in r}
    name = next(n for n, r in trained.items() if r["epochs"][-1] >= 1000)
    run = config["pretraining"][name]
    run["segment_epochs"] = every = 100
    workdir = new_workdir(tmp_path, config)
    targets = [f"results/{run['dataset']}/{name}/checkpoints/epoch{e}.pt" for e in run["epochs"]]
    output = run_local(workdir, "-n", "--profile", str(SLURM_PROFILE), *targets)
    starts = [0, *run["epochs"][:-1]]
    expected = sum(math.ceil((e - s) / every) for s, e in zip(starts, run["epochs"], strict=True))
    jobs = job_resources(output, run=name)
    assert len(jobs) == expected
    assert Counter(rule for rule, _ in jobs)["pretrain"] == len(run["epochs"])
    limit = int(30 + 1.2 * every * run["minutes_per_epoch"])
    assert all(res["runtime"] <= limit for _, res in jobs), limit


def job_resources(output: str, run: str | None = None) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job in a dry run's output (of one run, if given)."""
    jobs = []
    for block in output.split("\nrule ")[1:]:
        rule = block.split(":", 1)[0].strip()
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.MULTILINE)
        if run is not None and not (wildcards and f"run={run}" in wildcards.group(1)):
            continue
        resources = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        pairs = dict(p.split("=", 1) for p in resources.group(1).split(", ")) if resources else {}
        jobs.append((rule, {k: int(v) if v.isdigit() else v for k, v in pairs.items()}))
    return jobs


def test_every_gpu_rule_is_sized_in_the_slurm_profile(tmp_path):
    """CPUs per GPU and memory of every GPU job come from profiles/slurm's set-resources."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    output = run_local(new_workdir(tmp_path, config), "-n", "--profile", str(SLURM_PROFILE))
    sized = PROFILE["set-resources"]
    gpu_jobs = [(rule, res) for rule, res in job_resources(output) if res.get("gpu", 0) > 0]
    assert gpu_jobs
    for rule, res in gpu_jobs:
        assert rule in sized, f"GPU rule {rule} has no entry in profiles/slurm set-resources"
        assert res["cpus_per_gpu"] == sized[rule]["cpus_per_gpu"], rule
        assert res["mem_mb"] == sized[rule]["mem_mb"], rule
        assert res["runtime"] > 0, rule
