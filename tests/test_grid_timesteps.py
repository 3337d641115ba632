"""The grid search one timestep at a time: the same files as the joint grid search, and no
feature cache left on disk."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_probe_run

import ddae.grid_timesteps as grid_timesteps
from ddae.configs import ConfigError
from ddae.features import cache_features
from ddae.grid_timesteps import merge_timesteps, probe_timestep
from ddae.probing.grid_search import grid_search
from ddae.sources import ImageSource

pytestmark = pytest.mark.usefixtures("one_thread")
FEATURES = {"views": 2, "batch_size": 24}
PROBE = {"epochs": 2, "batch_size": 16, "standardize": True, "labels_per_class": 2}
TIMESTEPS = (11, 1, 40)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """An untrained tiny DDPM UNet checkpoint (T = 100) and 48 train / 20 test 8×8 digits."""
    return tiny_probe_run(tmp_path_factory.mktemp("grid_timesteps"), 48, 20)


def test_per_timestep_jobs_give_the_joint_grid_search_files(tiny_run, tmp_path):
    checkpoint, train, test = tiny_run
    source = ImageSource(train, test)
    cache_dirs = {t: tmp_path / "features" / f"t{t}" for t in TIMESTEPS}
    # the previous pipeline: every t cached, then all probes trained jointly (one group)
    for t, folder in cache_dirs.items():
        cache_features(checkpoint, source, t, 100, FEATURES, folder, "cpu", False)
    joint = grid_search(
        list(cache_dirs.values()), PROBE, tmp_path / "joint.csv", tmp_path / "joint.json"
    )
    # now: one job per t (cache, probe, delete), then the merge; an earlier attempt of t = 1,
    # killed while caching, left a staged folder: the job removes it, not another t's
    stale, other = tmp_path / "features" / ".t1.99.ab.tmp", tmp_path / "features" / ".t10.9.c.tmp"
    for folder in (stale, other):
        folder.mkdir()
        (folder / "train.npy").write_bytes(b"x")
    files = []
    for t, folder in cache_dirs.items():
        out = tmp_path / f"t{t}.json"
        record = probe_timestep(checkpoint, source, t, 100, FEATURES, PROBE, folder, out, "cpu")
        assert not folder.exists(), "the job deletes its cache"
        assert [row["t"] for row in record["rows"]] == [t] * 4
        files.append(tmp_path / f"t{t}.json")
    assert not stale.exists() and other.exists()
    merged = merge_timesteps(files, PROBE, tmp_path / "grid.csv", tmp_path / "grid.json")
    assert (tmp_path / "grid.csv").read_text() == (tmp_path / "joint.csv").read_text()
    assert (tmp_path / "grid.json").read_text() == (tmp_path / "joint.json").read_text()
    assert merged == joint and merged["probes"] == 3 * 4
    # a per-t file of another probe config or checkpoint is refused, naming the file
    with pytest.raises(ConfigError, match="t1.json: probe config"):
        merge_timesteps(files, {**PROBE, "epochs": 3}, tmp_path / "x.csv", tmp_path / "x.json")
    other = json.loads(files[1].read_text()) | {"checkpoint": "other.pt"}
    files[1].write_text(json.dumps(other))
    with pytest.raises(ConfigError, match="checkpoint differs"):
        merge_timesteps(files, PROBE, tmp_path / "x.csv", tmp_path / "x.json")
    with pytest.raises(ConfigError, match="repeat a timestep"):
        merge_timesteps(files[:1] * 2, PROBE, tmp_path / "x.csv", tmp_path / "x.json")


def test_a_failing_timestep_job_leaves_no_cache(tiny_run, tmp_path, monkeypatch):
    checkpoint, train, test = tiny_run

    def fail(*args, **kwargs):
        assert (tmp_path / "t5" / "train.npy").exists()  # the cache was written
        raise RuntimeError("probe failed")

    monkeypatch.setattr(grid_timesteps, "probe_feature_caches", fail)
    with pytest.raises(RuntimeError, match="probe failed"):
        probe_timestep(
            checkpoint,
            ImageSource(train, test),
            5,
            100,
            FEATURES,
            PROBE,
            tmp_path / "t5",
            tmp_path / "t5.json",
            "cpu",
            False,
        )
    assert not (tmp_path / "t5").exists() and not (tmp_path / "t5.json").exists()


def test_finished_timestep_jobs_leave_no_empty_feature_folders(tiny_run, tmp_path):
    """Issue 22 item 9: every grid job removed its cache but left features/epoch<E>/ empty."""
    checkpoint, train, test = tiny_run
    source = ImageSource(train, test)
    run = tmp_path / "results" / "digits" / "run"
    kept = run / "features" / "epoch3" / "t5"  # another epoch's job, still caching
    kept.mkdir(parents=True)
    folders = [run / "features" / "epoch2" / f"t{t}" for t in (11, 1)]
    for t, folder in zip((11, 1), folders, strict=True):
        probe_timestep(checkpoint, source, t, 100, FEATURES, PROBE, folder, tmp_path / "t.json")
    assert not (run / "features" / "epoch2").exists() and kept.is_dir()
    kept.rmdir()
    kept.parent.rmdir()  # that job finished too
    probe_timestep(checkpoint, source, 11, 100, FEATURES, PROBE, folders[0], tmp_path / "t.json")
    assert not (run / "features").exists() and run.is_dir()


def timestep_record(t: int, accuracies: list[float], config: dict) -> dict:
    """A per-t file as `probe_timestep` writes it (rows of every layer at t of 100 levels)."""
    sigma = t / 100
    return {
        "t": t,
        "feature_dir": f"results/digits/run/features/epoch2/t{t}",
        "steps": 100,
        "checkpoint": "results/digits/run/checkpoints/epoch2.pt",
        "views": 2,
        "num_classes": 10,
        "features_config": {"views": 2},
        "layers": [f"block{layer}" for layer in range(1, len(accuracies) + 1)],
        "config": config,
        "rows": [
            {
                "layer": layer,
                "layer_name": f"block{layer}",
                "t": t,
                "steps": 100,
                "sigma": sigma,
                "test_accuracy": accuracy,
            }
            for layer, accuracy in enumerate(accuracies, 1)
        ],
        "created_by": "ddae.grid_timesteps.probe_timestep",
    }


@pytest.mark.parametrize(
    ("good", "bad", "problem"),
    [
        # issue 21 case 4: a NaN accuracy used to become the grid's "best" cell
        (
            'test_accuracy": 40.0',
            'test_accuracy": NaN',
            r"rows\[1\] key 'test_accuracy' must be finite",
        ),
        (
            'test_accuracy": 40.0',
            'test_accuracy": 400.0',
            r"rows\[1\] key 'test_accuracy' must lie in",
        ),
        ('layer": 2', 'layer": 0', r"rows\[1\] key 'layer' must lie in \[1, inf\)"),
        ('t": 11', 't": 111', r"key 't' must lie in 1\.\.100 \(its steps\)"),
        (
            'probe_timestep"',
            'finetune"',
            "'created_by' is 'ddae.grid_timesteps.finetune', but this file is written by",
        ),
        ("epoch2.pt", "epoch1.pt", "'checkpoint' is .*epoch1.pt', but this path's result is of"),
    ],
)
def test_merge_reads_each_timestep_file_through_its_contract(tmp_path, good, bad, problem):
    """Every per-t file is read through its contract, naming the file and the field (the first
    occurrence of ``good`` in the t = 11 file becomes ``bad``)."""
    from ddae.configs import from_mapping, to_mapping
    from ddae.settings.probes import GridSearchConfig

    config = to_mapping(from_mapping(GridSearchConfig, PROBE, "probe"))
    folder = tmp_path / "results/digits/run/grid_timesteps/epoch2"
    folder.mkdir(parents=True)
    files = [folder / f"t{t}.json" for t in (1, 11)]
    for path, t in zip(files, (1, 11), strict=True):
        path.write_text(json.dumps(timestep_record(t, [30.0, 40.0], config), indent=2))
    merged = merge_timesteps(files, PROBE, tmp_path / "grid.csv", tmp_path / "grid.json")
    assert (merged["layer"], merged["t"], merged["test_accuracy"]) == (2, 1, 40.0)
    text = files[1].read_text()
    assert good in text
    files[1].write_text(text.replace(good, bad, 1))
    with pytest.raises(ConfigError, match=problem) as caught:
        merge_timesteps(files, PROBE, tmp_path / "x.csv", tmp_path / "x.json")
    assert "t11.json" in str(caught.value)
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.json").exists()
