"""A damaged or foreign result file stops the table or figure that reads it, naming the file;
only a file that does not exist is "not run" (issue 15, item 1)."""

from __future__ import annotations

import json

import pytest
from conftest import result_provenance

from ddae.report import figures
from ddae.report.comparison import write_comparison_table
from ddae.report.layer_choice import write_label_free_table
from ddae.result_files import (
    ResultFileError,
    check_existing_results,
    read_result_csv,
    read_result_json,
    result_kind,
)

GOOD = {"test_accuracy": 93.1, "created_by": "ddae.probing.linear_probe", "checkpoint": "a.pt"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            '{"test_accuracy": NaN, "created_by": "x", "checkpoint": null}',
            "'test_accuracy' must be",
        ),
        ('{"test_accuracy": "high", "created_by": "x", "checkpoint": null}', "must be a number"),
        ('{"test_accuracy": true, "created_by": "x", "checkpoint": null}', "must be a number"),
        ('{"test_accuracy": 1e999, "created_by": "x", "checkpoint": null}', "must be finite"),
        ('{"test_accuracy": 930, "created_by": "x", "checkpoint": null}', r"must lie in"),
        ('{"test_accuracy": 93.1}', "'created_by' is missing"),
        ('{"created_by": "x", "checkpoint": null}', "'test_accuracy' is missing"),
        ("garbage{", "not valid JSON"),
        ("[93.1]", "expected a JSON object"),
    ],
)
def test_bad_linear_probe_json_fails_table2_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "linear/epoch2.json"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(ResultFileError, match=problem) as caught:
        write_comparison_table(
            "table2", {"cifar10_edm": {"linear": path}}, tmp_path / "t.csv", tmp_path / "t.md"
        )
    assert str(path) in str(caught.value)
    assert not (tmp_path / "t.csv").exists()


def test_only_a_missing_file_is_not_run(tmp_path):
    assert read_result_json(tmp_path / "absent.json", "accuracy") is None
    assert read_result_csv(tmp_path / "absent.csv", "grid") is None
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(GOOD))
    assert read_result_json(path, "accuracy")["test_accuracy"] == 93.1


def test_fid_result_needs_its_extractor_and_sample_count(tmp_path):
    path = tmp_path / "fid.json"
    path.write_text(json.dumps({"fid": 3.5, "created_by": "x", "checkpoint": "c.pt"}))
    with pytest.raises(ResultFileError, match="'extractor' is missing"):
        read_result_json(path, "fid")
    path.write_text(json.dumps({**result_provenance({"fid": 1}), "fid": -1.0}))
    with pytest.raises(ResultFileError, match="'fid' must lie in"):
        read_result_json(path, "fid")


def align_rows(value="0.5"):
    return (
        "layer,layer_name,t,steps,sigma,alignment,uniformity\n"
        f"1,b1,11,1000,0.1,{value},-1.0\n2,b2,11,1000,0.1,0.4,-1.2\n"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a,b\n1,2\n", "missing column"),
        (align_rows("nan"), "'alignment' row 1"),
        (align_rows("inf"), "'alignment' row 1"),
        (align_rows("high"), "'alignment' row 1"),
        ("layer,layer_name,t,steps,sigma,alignment,uniformity\n", "no rows"),
        ("", "not a readable CSV"),
    ],
)
def test_bad_align_uniform_csv_stops_figure3(tmp_path, text, problem):
    good, bad = tmp_path / "epoch1.csv", tmp_path / "epoch2.csv"
    good.write_text(align_rows())
    bad.write_text(text)
    with pytest.raises(ResultFileError, match=problem) as caught:
        figures.figure3({"DDPM": {1: good, 2: bad}}, tmp_path / "f.png", tmp_path / "f.pdf")
    assert str(bad) in str(caught.value)
    assert not (tmp_path / "f.png").exists()


def test_bad_grid_csv_stops_the_label_free_table(tmp_path):
    align, grid = tmp_path / "au.csv", tmp_path / "grid.csv"
    align.write_text(align_rows())
    grid.write_text("layer,t\n1,11\n")
    with pytest.raises(ResultFileError, match="missing column"):
        write_label_free_table(
            [{"label": "x", "align_uniform": align, "grid": grid}],
            tmp_path / "t.csv",
            tmp_path / "t.md",
        )


def test_existing_results_are_checked_by_their_stage_folder(tmp_path):
    """What the Snakefile runs while planning the tables and figures: every existing result
    file is validated by the kind its folder tells; missing ones and other paths pass."""
    run = tmp_path / "results/digits/run"
    (run / "linear").mkdir(parents=True)
    (run / "grid").mkdir()
    good = run / "linear/epoch2.json"
    probe = {"layer": 1, "t": 11, "steps": 1000, "sigma": 0.1, "checkpoint": "x/epoch2.pt"}
    good.write_text(json.dumps({**GOOD, **probe}))
    with pytest.raises(
        ResultFileError,
        match=r"'checkpoint' is 'x/epoch2\.pt', but .* of "
        r"results/digits/run/checkpoints/epoch2\.pt",
    ):
        check_existing_results([good])
    good.write_text(json.dumps({**GOOD, **probe, "checkpoint": str(run / "checkpoints/epoch2.pt")}))
    (run / "grid/epoch2.csv").write_text("layer,layer_name,t,steps,sigma,test_accuracy\n")
    other = tmp_path / "results/table3.md"
    other.write_text("not a result file")
    pixels = run / "grid/pixels.json"  # beside the grid choices, but of its own kind
    pixels.write_text(
        json.dumps(
            {
                **GOOD,
                "num_classes": 10,
                "created_by": "ddae.probing.pixel_probe",
                "checkpoint": None,
            }
        )
    )
    check_existing_results([good, run / "linear/epoch9.json", other, pixels])
    assert result_kind(pixels) == ("json", "pixel_probe")
    assert result_kind(good) == ("json", "probe")
    assert result_kind(run / "grid/epoch2.json") == ("json", "grid_choice")
    assert result_kind(run / "linear/notes.json") is None
    with pytest.raises(ResultFileError, match=r"grid/epoch2\.csv: grid CSV has no rows.*kept"):
        check_existing_results([good, run / "grid/epoch2.csv"])
    good.write_text("garbage{")
    with pytest.raises(ResultFileError, match=r"linear/epoch2\.json: not valid JSON"):
        check_existing_results([good])
