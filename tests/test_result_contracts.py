"""The result-file contracts (issue 21, ddae.pipeline.contracts): every kind's ranges, the
provenance a file must record at its place, a grid CSV against its choice, bounded reads, and the
writers refusing what the readers refuse. Synthetic results of one run, as the smoke run writes
them (values from its digits_ddpm and digits_ddpmpp_edm results)."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ddae.pipeline.contracts import (
    MAX_RESULT_BYTES,
    ResultContractError,
    locate,
    verified_result,
    verified_results,
)
from ddae.result_files import ResultFileError, read_result_csv, read_result_json
from ddae.result_writers import write_csv, write_json

RUN = "results/digits/run"
CHECKPOINT = f"{RUN}/checkpoints/epoch2.pt"
PAIR = {"layer": 1, "layer_name": "block1", "t": 1, "steps": 1000, "sigma": 0.01}
GRID_ROWS = [  # layer, t, sigma, accuracy: best is layer 1 at t 1
    (layer, t, sigma, accuracy)
    for t, sigma, accuracies in ((1, 0.01, (77.5, 72.5)), (101, 0.34, (42.5, 46.5)))
    for layer, accuracy in zip((1, 2), accuracies, strict=True)
]


def grid_csv(rows=GRID_ROWS) -> str:
    lines = ["layer,layer_name,t,steps,sigma,test_accuracy"]
    lines += [f"{layer},block{layer},{t},1000,{sigma},{acc}" for layer, t, sigma, acc in rows]
    return "\n".join(lines) + "\n"


RESULTS = {
    f"{RUN}/linear/epoch2.json": {
        "test_accuracy": 68.1, **PAIR, "checkpoint": CHECKPOINT,
        "created_by": "ddae.probing.linear_probe",
    },
    f"{RUN}/linear/layer2_t11/epoch2.json": {
        "test_accuracy": 60.0, **PAIR, "layer": 2, "t": 11, "checkpoint": CHECKPOINT,
        "created_by": "ddae.probing.linear_probe",
    },
    f"{RUN}/finetune/epoch2.json": {
        "test_accuracy": 77.5, **PAIR, "checkpoint": CHECKPOINT, "created_by": "finetune",
    },
    f"{RUN}/scratch.json": {
        "test_accuracy": 56.4, **PAIR, "checkpoint": None, "created_by": "train_from_scratch",
    },
    "results/digits/baselines/wrn.json": {
        "test_accuracy": 48.3, "layer": None, "t": None, "steps": None, "sigma": None,
        "checkpoint": None, "created_by": "train_supervised_wrn",
    },
    f"{RUN}/fid/epoch2.json": {
        "fid": 4.2, "extractor": "random_conv", "samples": 256, "checkpoint": CHECKPOINT,
        "created_by": "ddae.fid.sample_and_score",
    },
    f"{RUN}/grid/pixels.json": {
        "test_accuracy": 82.8, "num_classes": 10, "checkpoint": None,
        "created_by": "ddae.probing.pixel_probe",
    },
    f"{RUN}/grid/epoch2.json": {
        **PAIR, "test_accuracy": 77.5, "checkpoint": CHECKPOINT,
        "created_by": "ddae.probing.grid_search",
    },
    f"{RUN}/grid_timesteps/epoch2/t101.json": {
        "t": 101, "steps": 1000, "checkpoint": CHECKPOINT,
        "created_by": "ddae.grid_timesteps.probe_timestep",
        "rows": [
            {**PAIR, "layer": layer, "layer_name": f"block{layer}", "t": 101, "sigma": 0.34,
             "test_accuracy": acc}
            for layer, acc in ((1, 42.5), (2, 46.5))
        ],
    },
    f"{RUN}/grid/epoch2.csv": grid_csv(),
    f"{RUN}/align_uniform/epoch2.csv": (
        "layer,layer_name,t,steps,sigma,alignment,uniformity\n"
        "1,block1,1,1000,0.01,7.1e-06,-0.0039\n2,block2,1,1000,0.01,2.6e-05,-0.015\n"
    ),
    f"{RUN}/noisy/epoch2.csv": (
        "t,steps,sigma,test_accuracy\n1,1000,0.01,10.0\n251,1000,0.96,12.5\n501,1000,3.44,10.0\n"
    ),
    "results/digits/baselines/noisy_wrn_ve.csv": (
        "t,steps,sigma,test_accuracy\n1,18,0.002,10.3\n2,18,0.0075,11.9\n"
    ),
}  # fmt: skip


@pytest.fixture
def results(tmp_path, monkeypatch) -> Path:
    """The synthetic results under tmp_path, which is the working directory (as Snakemake's)."""
    monkeypatch.chdir(tmp_path)
    for name, content in RESULTS.items():
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else json.dumps(content, indent=2)
        Path(name).write_text(text)
    return tmp_path


def edited(path: str, **values) -> str:
    """``path``'s JSON with ``values`` set; returns the path."""
    record = json.loads(Path(path).read_text())
    Path(path).write_text(json.dumps({**record, **values}))
    return path


def edited_cell(path: str, row: int, column: str, value: str) -> str:
    """``path``'s CSV with one cell replaced (row 1 is the first after the header)."""
    rows = list(csv.reader(io.StringIO(Path(path).read_text())))
    rows[row][rows[0].index(column)] = value
    Path(path).write_text("\n".join(",".join(row) for row in rows) + "\n")
    return path


def refused(path: str, match: str, **bounds) -> str:
    with pytest.raises(ResultContractError, match=match) as caught:
        verified_result(path, **bounds)
    message = str(caught.value)
    assert path in message and "outputs that read this file are kept" in message
    return message


def test_every_good_result_passes_and_its_path_comes_back(results):
    assert verified_results(list(RESULTS), layers=2, levels=1000) == list(RESULTS)
    assert verified_result(f"{RUN}/linear/epoch4.json") == f"{RUN}/linear/epoch4.json"  # to make
    assert verified_result("results/table3.md") == "results/table3.md"  # of no result kind
    assert locate(f"{RUN}/grid/epoch2.csv").run == "run"  # whose layers and levels bound it
    assert locate("results/digits/baselines/wrn.json").run is None
    assert {locate(name).kind for name in RESULTS} == {
        "probe", "accuracy", "fid", "pixel_probe", "grid_choice", "grid_timestep", "grid",
        "align_uniform", "noisy",
    }  # fmt: skip


JSON_RANGES = [  # (file, key, bad value, message)
    ("linear/epoch2.json", "test_accuracy", 100.5, r"must lie in \[0, 100\]"),
    ("linear/epoch2.json", "test_accuracy", -0.1, r"must lie in \[0, 100\]"),
    ("finetune/epoch2.json", "test_accuracy", 500, r"must lie in \[0, 100\]"),
    ("linear/epoch2.json", "sigma", 0.0, r"must lie in \(0, inf\)"),
    ("linear/epoch2.json", "steps", 0, r"must lie in \[1, inf\)"),
    ("linear/epoch2.json", "layer", 0, r"must lie in \[1, inf\)"),
    ("linear/epoch2.json", "t", 1001, r"must lie in 1\.\.1000 \(its steps\)"),
    ("linear/epoch2.json", "t", 1.5, "must be an integer"),
    ("linear/epoch2.json", "layer", None, "must be a integer"),
    ("linear/epoch2.json", "test_accuracy", True, "must be a number"),
    ("scratch.json", "test_accuracy", 101, r"must lie in \[0, 100\]"),
    ("scratch.json", "sigma", -1.0, r"must lie in \(0, inf\)"),
    ("fid/epoch2.json", "fid", -0.5, r"must lie in \[0, inf\)"),
    ("fid/epoch2.json", "samples", 0, r"must lie in \[1, inf\)"),
    ("fid/epoch2.json", "extractor", "", "must be a non-empty string"),
    ("grid/pixels.json", "num_classes", 1, r"must lie in \[2, inf\)"),
    ("grid/epoch2.json", "layer", 0, r"must lie in \[1, inf\)"),
    ("grid/epoch2.json", "t", 0, r"must lie in \[1, inf\)"),
    ("grid/epoch2.json", "test_accuracy", float("nan"), "must be finite"),
    ("grid_timesteps/epoch2/t101.json", "steps", 100, r"must lie in 1\.\.100 \(its steps\)"),
]


@pytest.mark.parametrize(("name", "key", "value", "problem"), JSON_RANGES)
def test_a_json_value_out_of_range_stops_planning_naming_file_and_key(
    results, name, key, value, problem
):
    path = edited(f"{RUN}/{name}", **{key: value})
    refused(path, rf"key '{key}' {problem}|key 't' {problem}")


CSV_RANGES = [  # (file, row, column, bad value, message)
    ("grid/epoch2.csv", 1, "test_accuracy", "500", r"must lie in \[0, 100\]"),  # case 1
    ("grid/epoch2.csv", 2, "layer", "0", r"must lie in \[1, inf\)"),
    ("grid/epoch2.csv", 2, "t", "0", r"must lie in \[1, inf\)"),
    ("grid/epoch2.csv", 3, "steps", "100", r"must lie in 1\.\.100 \(its steps\)"),
    ("grid/epoch2.csv", 3, "sigma", "-1", r"must lie in \(0, inf\)"),
    ("grid/epoch2.csv", 3, "test_accuracy", "nan", "must be finite"),
    ("grid/epoch2.csv", 3, "test_accuracy", "high", "must be a number"),
    ("grid/epoch2.csv", 3, "layer_name", "", "must be a non-empty string"),
    ("noisy/epoch2.csv", 2, "test_accuracy", "-40", r"must lie in \[0, 100\]"),  # case 1
    ("align_uniform/epoch2.csv", 1, "alignment", "-3", r"must lie in \[0, inf\)"),  # case 1
    ("align_uniform/epoch2.csv", 2, "uniformity", "5", r"must lie in \(-inf, 0\]"),  # case 1
]


@pytest.mark.parametrize(("name", "row", "column", "value", "problem"), CSV_RANGES)
def test_a_csv_value_out_of_range_stops_planning_naming_file_column_and_row(
    results, name, row, column, value, problem
):
    path = edited_cell(f"{RUN}/{name}", row, column, value)
    shown = "t" if column == "steps" else column  # t must lie within a smaller steps
    refused(path, rf"column '{shown}' row {row} {problem}")


def test_the_runs_layer_count_and_levels_bound_layer_and_t(results):
    refused(f"{RUN}/grid/epoch2.csv", r"column 'layer' row 2 must lie in 1\.\.1 \(the network's "
            r"decoder layers\), got 2", layers=1)  # fmt: skip
    refused(f"{RUN}/noisy/epoch2.csv", r"column 't' row 3 must lie in 1\.\.500 \(the run's noise "
            r"levels\), got 501", levels=500)  # fmt: skip
    refused(f"{RUN}/align_uniform/epoch2.csv", "column 'layer' row 2", layers=1)
    refused(f"{RUN}/grid_timesteps/epoch2/t101.json", r"rows\[1\] key 'layer'", layers=1)
    refused(f"{RUN}/linear/epoch2.json", r"key 't' must lie in 1\.\.0", levels=0)
    path = edited(f"{RUN}/grid/epoch2.json", layer=99)  # case 3
    refused(path, r"key 'layer' must lie in 1\.\.4 \(the network's decoder layers\), got 99",
            layers=4)  # fmt: skip
    assert verified_result(f"{RUN}/linear/epoch2.json", layers=1, levels=1) == (
        f"{RUN}/linear/epoch2.json"
    )


PROVENANCE = [  # (file, key, foreign value, message)
    ("linear/epoch2.json", "created_by", "finetune", r"written by ddae\.probing\.linear_probe"),
    ("finetune/epoch2.json", "created_by", "ddae.probing.linear_probe", "written by finetune"),
    ("fid/epoch2.json", "created_by", "x", r"written by ddae\.fid\.sample_and_score"),
    ("grid/epoch2.json", "created_by", "x", r"written by ddae\.probing\.grid_search"),
    ("grid/pixels.json", "created_by", "x", r"written by ddae\.probing\.pixel_probe"),
    ("scratch.json", "created_by", "finetune", "written by train_from_scratch"),
    ("linear/epoch2.json", "checkpoint", "results/digits/other/checkpoints/epoch2.pt",
     "another run or epoch"),
    ("linear/epoch2.json", "checkpoint", f"{RUN}/checkpoints/epoch1.pt", "another run or epoch"),
    ("fid/epoch2.json", "checkpoint", None, "another run or epoch"),
    ("grid/epoch2.json", "checkpoint", "elsewhere/epoch2.pt", "another run or epoch"),
    ("grid_timesteps/epoch2/t101.json", "checkpoint", "results/x/run/checkpoints/epoch2.pt",
     "another run or epoch"),
    ("scratch.json", "checkpoint", CHECKPOINT, r"of no checkpoint \(null expected\)"),
    ("grid/pixels.json", "checkpoint", CHECKPOINT, r"of no checkpoint \(null expected\)"),
    ("linear/layer2_t11/epoch2.json", "layer", 1, "the path names layer 2"),
    ("linear/layer2_t11/epoch2.json", "t", 1, "the path names t 11"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "key", "value", "problem"), PROVENANCE)
def test_a_result_of_another_stage_run_or_epoch_is_refused(results, name, key, value, problem):
    path = edited(f"{RUN}/{name}", **{key: value})
    refused(path, re.escape(f"key '{key}' is {value!r}") + f".*{problem}")


def test_a_nan_accuracy_in_a_per_t_grid_record_stops_planning(results):
    """Issue 21 case 4, as grid_search's input function sees it (the file has NaN, not JSON)."""
    path = Path(f"{RUN}/grid_timesteps/epoch2/t101.json")
    path.write_text(path.read_text().replace('"test_accuracy": 42.5', '"test_accuracy": NaN'))
    refused(str(path), r"rows\[0\] key 'test_accuracy' must be finite, got nan")


def test_a_copied_result_of_another_run_and_stage_is_refused(results):
    """Issue 21 case 2: digits_ddpm's fine-tuning result copied over another run's probe."""
    other = Path("results/digits/other/finetune/epoch2.json")
    other.parent.mkdir(parents=True)
    other.write_text(
        json.dumps(
            {
                **RESULTS[f"{RUN}/finetune/epoch2.json"],
                "checkpoint": "results/digits/other/checkpoints/epoch2.pt",
            }
        )
    )
    assert verified_result(str(other)) == str(other)
    Path(f"{RUN}/linear/epoch2.json").write_bytes(other.read_bytes())
    refused(f"{RUN}/linear/epoch2.json", "key 'created_by' is 'finetune'")
    edited(f"{RUN}/linear/epoch2.json", created_by="ddae.probing.linear_probe")
    refused(f"{RUN}/linear/epoch2.json", "key 'checkpoint' is 'results/digits/other/")


def test_a_grid_csv_and_its_choice_must_agree(results):
    """The choice is the CSV's best cell (highest accuracy, then lowest t, then lowest layer)."""
    choice, grid = f"{RUN}/grid/epoch2.json", f"{RUN}/grid/epoch2.csv"
    original = Path(grid).read_text()
    edited_cell(grid, 4, "test_accuracy", "99.0")  # layer 2 at t 101 now best: case 1
    for path in (grid, choice):
        refused(path, rf"{choice}: key 'layer' is 1, but the best cell of {grid} \(layer 2, "
                r"t 101: 99\.0%\) has 2: the grid CSV and its choice disagree")  # fmt: skip
    edited_cell(grid, 4, "test_accuracy", "77.5")  # a tie: the lower t wins, the choice stands
    assert verified_results([grid, choice]) == [grid, choice]
    Path(grid).write_text(original)
    edited(choice, test_accuracy=77.0)
    refused(grid, "key 'test_accuracy' is 77.0, but the best cell")
    edited(choice, test_accuracy=77.5, t=101, layer=1)
    refused(choice, "key 't' is 101, but the best cell")
    edited(choice, layer=99, t=1)  # case 3 without the layer count: the CSV disagrees
    refused(choice, "key 'layer' is 99, but the best cell")


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        (GRID_ROWS + GRID_ROWS[:1], r"the cell \(layer 1, t 1\) appears twice"),
        ([(1, 1, 0.01, 77.5), (1, 2, 0.01, 70.0)], r"'sigma' is 0\.01 at t 2, not above 0\.01"),
        ([(1, 1, 0.01, 77.5), (2, 1, 0.02, 70.0)], r"'sigma' is 0\.02 and 0\.01 at t 1"),
    ],
)
def test_a_grid_csv_is_consistent_within_itself(results, rows, problem):
    Path(f"{RUN}/grid/epoch2.json").unlink()
    Path(f"{RUN}/grid/epoch2.csv").write_text(grid_csv(rows))
    refused(f"{RUN}/grid/epoch2.csv", problem)


def test_one_steps_per_csv(results):
    path = edited_cell(f"{RUN}/noisy/epoch2.csv", 1, "steps", "18")
    refused(path, r"column 'steps' holds several values \[18, 1000\]")


def test_a_fifo_or_device_at_a_result_path_is_refused_without_blocking(results):
    """Issue 21 case 5: a FIFO used to hang planning, a symlink to /dev/zero to eat memory."""
    path = Path(f"{RUN}/linear/epoch2.json")
    path.unlink()
    os.mkfifo(path)
    signal.alarm(20)  # a blocking open would hang here, and fail the test instead
    try:
        refused(str(path), "is a FIFO, not a regular result file")
        with pytest.raises(ResultFileError, match="is a FIFO"):
            read_result_json(path, "accuracy")
    finally:
        signal.alarm(0)
    path.unlink()
    path.symlink_to("/dev/zero")
    refused(str(path), r"is a character device \(a symlink to /dev/zero\)")
    path.unlink()
    path.symlink_to(Path(f"{RUN}/finetune/epoch2.json").resolve())  # a regular file behind it
    refused(str(path), "key 'created_by' is 'finetune'")  # read, and checked
    path.unlink()
    path.mkdir()
    refused(str(path), "is a directory")


def test_an_oversized_result_is_refused_unread(results):
    path = Path(f"{RUN}/grid/epoch2.csv")
    with path.open("r+b") as handle:  # sparse: nothing of it is read, or written to disk
        handle.truncate(MAX_RESULT_BYTES + 1)
    refused(str(path), rf"{MAX_RESULT_BYTES + 1} bytes, more than a result file holds")
    with pytest.raises(ResultFileError, match="more than a result file holds"):
        read_result_csv(path, "grid")


def test_a_writer_refuses_an_out_of_contract_value_and_writes_nothing(results):
    folder = Path(f"{RUN}/linear")
    before = sorted(os.listdir(folder))
    good = {**RESULTS[f"{RUN}/linear/epoch2.json"], "checkpoint": f"{RUN}/checkpoints/epoch4.pt"}
    for values, problem in [
        ({"test_accuracy": 250.0}, r"key 'test_accuracy' must lie in \[0, 100\]"),
        ({"created_by": "finetune"}, "key 'created_by' is 'finetune'"),
        ({"checkpoint": CHECKPOINT}, "key 'checkpoint' is .*epoch2.pt', but"),
        ({"history": [{"loss": float("nan")}]}, "a value is not finite"),
    ]:
        with pytest.raises(ResultFileError, match=problem):
            write_json(folder / "epoch4.json", {**good, **values})
        assert sorted(os.listdir(folder)) == before  # no file, no temporary, no lock
    rows = [{"t": 1, "steps": 1000, "sigma": 0.01, "test_accuracy": -40.0}]
    with pytest.raises(ResultFileError, match=r"column 'test_accuracy' row 1 must lie in"):
        write_csv(f"{RUN}/noisy/epoch4.csv", ["t", "steps", "sigma", "test_accuracy"], rows)
    assert not Path(f"{RUN}/noisy/epoch4.csv").exists()
    write_json("results/findings.json", {"nan": float("nan")})  # of no contract kind: as before
    write_json(folder / "epoch4.json", good)
    assert read_result_json(folder / "epoch4.json", "probe") == good


def test_the_tables_readers_check_content_not_provenance(results):
    """Tables also read synthetic results; provenance against the path is planning's."""
    path = edited(f"{RUN}/linear/epoch2.json", created_by="tests", checkpoint=None)
    assert read_result_json(path, "accuracy")["created_by"] == "tests"
    frame = read_result_csv(f"{RUN}/grid/epoch2.csv", "grid")
    assert frame["test_accuracy"].tolist() == [77.5, 72.5, 42.5, 46.5]
    assert str(frame["layer"].dtype) == "int64"
    edited_cell(f"{RUN}/grid/epoch2.csv", 1, "test_accuracy", "500")
    with pytest.raises(ResultFileError, match="column 'test_accuracy' row 1 must lie in"):
        read_result_csv(f"{RUN}/grid/epoch2.csv", "grid")


def test_planning_imports_no_torch_numpy_or_pandas():
    code = (
        "import sys; import ddae.pipeline.contracts; "
        "print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


def test_the_contracts_name_the_classifier_writers_created_by():
    from ddae.finetune import PretrainedEncoder, ScratchEncoder, WideResNetModel

    writers = {locate(name).writers for name in RESULTS if name.endswith(".json")}
    for model in (PretrainedEncoder, ScratchEncoder, WideResNetModel):
        assert (model.created_by,) in writers
