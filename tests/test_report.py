"""Tables 2–4, 6–9 and the label-free layer choice from small synthetic result files.

Paper values must come from the reference file, "ours" from result files, and a missing result
must never turn into a number.
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
from conftest import result_provenance

import ddae.report.comparison as report
from ddae.report.comparison import comparison_table, write_comparison_table
from ddae.report.layer_choice import label_free_choice, label_free_table, write_label_free_table
from ddae.report.reference import load_reference
from ddae.report.settings import settings_table, write_settings_table
from ddae.report.table9 import table9, write_table9


def write_json(path, **values):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result_provenance(values), **values}))
    return path


def row(frame, method, evaluation, quantity="accuracy (%)", section=None):
    hit = frame[
        (frame["method"] == method)
        & (frame["evaluation"] == evaluation)
        & (frame["quantity"] == quantity)
    ]
    if section is not None:
        hit = hit[hit["section"] == section]
    assert len(hit) == 1, (method, evaluation, quantity, section)
    return hit.iloc[0]


@pytest.fixture
def results(tmp_path):
    edm = tmp_path / "results/cifar10/cifar10_edm"
    return {
        "cifar10_edm": {
            "linear": write_json(edm / "linear/epoch4000.json", test_accuracy=93.14),
            "fid": write_json(edm / "fid/epoch4000.json", fid=3.5),
            "finetune": edm / "finetune/epoch4000.json",  # wired but never produced
        },
        "cifar10_wrn": {
            "supervised": write_json(
                tmp_path / "results/cifar10/baselines/wrn.json", test_accuracy=95.0
            )
        },
    }


def test_reference_holds_the_papers_headline_numbers():
    reference = load_reference()
    table2 = {(r["section"], r["method"], r["evaluation"]): r for r in reference["table2"]}
    assert table2["CIFAR-10", "DDAE (EDM)", "Linear"]["accuracy"] == 95.9
    assert table2["CIFAR-10", "DDAE (EDM)", "Linear"]["fid"] == 2.0
    assert table2["CIFAR-10", "DDAE (EDM)", "Fine-tune"]["accuracy"] == 97.2
    assert table2["Tiny-ImageNet", "DDAE (EDM)", "Linear"]["fid"] == 19.5
    assert table2["Tiny-ImageNet", "HybViT", "Supervised"]["accuracy"] == 56.7
    assert reference["table9"]["cifar10_edm"] == {
        "model": "EDM",
        "dataset": "CIFAR-10@32",
        "layer": 6,
        "layers": 15,
        "where": "1st block@16",
        "t": 4,
        "steps": 18,
    }
    for name in ("table2", "table3", "table4"):
        for entry in reference[name]:
            assert entry["status"] in {"paper", "reported"}
            assert entry.get("source"), entry
            if entry["status"] == "reported":
                assert entry.get("cite") and "ours" not in entry, entry


def test_table2_ours_beside_paper(results, tmp_path):
    frame = write_comparison_table("table2", results, tmp_path / "t2.csv", tmp_path / "t2.md")
    linear = row(frame, "DDAE (EDM)", "Linear", section="CIFAR-10")
    assert (linear["measured"], linear["paper"], linear["difference"]) == (93.14, 95.9, -2.76)
    fid = row(frame, "DDAE (EDM)", "Linear", "FID", section="CIFAR-10")
    assert (fid["measured"], fid["paper"], fid["difference"]) == (3.5, 2.0, 1.5)
    wrn = row(frame, "WideResNet-28-10", "Supervised", section="CIFAR-10")
    assert (wrn["measured"], wrn["paper"]) == (95.0, 96.3)
    finetune = row(frame, "DDAE (EDM)", "Fine-tune", section="CIFAR-10")
    assert (finetune["measured"], finetune["status"]) == ("", "not run")
    tiny = row(frame, "DDAE (EDM)", "Linear", section="Tiny-ImageNet")
    assert (tiny["measured"], tiny["difference"], tiny["status"]) == ("", "", "not run")
    hybvit = row(frame, "HybViT", "Supervised", "FID", section="CIFAR-10")
    assert hybvit["paper"] == 26.4 and hybvit["paper_origin"] == "reported"
    assert hybvit["measured"] == "" and hybvit["status"].startswith("reported")
    # written CSV: missing results are empty cells, never numbers
    written = pd.read_csv(tmp_path / "t2.csv")
    not_measured = written[written["status"] != "measured"]
    assert not_measured["measured"].isna().all()
    assert not_measured["difference"].isna().all()
    markdown = (tmp_path / "t2.md").read_text()
    assert "93.1" in markdown and "not run" in markdown and "-2.8" in markdown


def test_paper_values_come_only_from_the_reference(results, monkeypatch):
    altered = copy.deepcopy(load_reference())
    for entry in altered["table2"]:
        if entry["method"] == "DDAE (EDM)" and entry["evaluation"] == "Linear":
            entry["accuracy"] = 12.3
    monkeypatch.setattr(report, "load_reference", lambda: altered)
    frame = comparison_table("table2", results)
    linear = row(frame, "DDAE (EDM)", "Linear", section="CIFAR-10")
    assert (linear["paper"], linear["measured"]) == (12.3, 93.14)


def test_tables3_and_4_say_what_is_not_reproduced(results, tmp_path):
    frame = comparison_table("table3", results)
    transfer = row(frame, "DDAE (EDM)", "Linear", section="CIFAR-10, with ImageNet transfer")
    assert transfer["status"] == "not reproduced" and "ImageNet" in transfer["note"]
    assert transfer["measured"] == "" and transfer["paper"] == 91.4
    dit = row(frame, "DDAE (DiT-XL/2)", "Fine-tune")
    assert dit["status"] == "not reproduced" and "DiT" in dit["note"]
    simclr = row(frame, "SimCLR Res-50-4x", "Fine-tune")
    assert simclr["paper"] == 98.6 and simclr["paper_origin"] == "reported"
    # once DiT results exist they are used
    results["cifar10_dit"] = {"linear": write_json(tmp_path / "dit.json", test_accuracy=80.0)}
    frame = comparison_table("table3", results)
    dit = row(frame, "DDAE (DiT-XL/2)", "Linear")
    assert (dit["measured"], dit["difference"], dit["status"]) == (80.0, -4.3, "measured")
    assert row(frame, "DDAE (DiT-XL/2)", "Fine-tune")["status"] == "not run"
    tiny = write_comparison_table("table4", {}, tmp_path / "t4.csv", tmp_path / "t4.md")
    assert (tiny["measured"] == "").all()
    assert "Params (M, paper)" in (tmp_path / "t4.md").read_text()


def test_unknown_result_keys_are_errors():
    with pytest.raises(ValueError, match="unknown model"):
        comparison_table("table2", {"cifar_edm": {}})
    with pytest.raises(ValueError, match="unknown result kind"):
        comparison_table("table2", {"cifar10_edm": {"linar": "x.json"}})


def write_grid(path, accuracy, steps=1000, ts=(6, 11, 16), layers=12):
    rows = [
        {
            "layer": k,
            "layer_name": f"block{k}",
            "t": t,
            "steps": steps,
            "sigma": 0.01 * t,
            "test_accuracy": accuracy(k, t),
        }
        for k in range(1, layers + 1)
        for t in ts
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)
    best = max(rows, key=lambda row: row["test_accuracy"])  # the grid search's choice file
    write_json(path.with_suffix(".json"), **best)
    return path


def grid_files(path):
    """A grid CSV and the choice file its grid search writes beside it."""
    return {"grid": path, "choice": path.with_suffix(".json")}


def peak(layer, t):
    return lambda k, s: 90.0 - abs(k - layer) - 0.1 * abs(s - t)


def test_table9_grid_winner_beside_paper(tmp_path):
    columns = [
        {
            "label": "CIFAR-10 DDPM",
            **grid_files(write_grid(tmp_path / "a.csv", peak(7, 11))),
            "paper": "cifar10_ddpm",
        },
        {
            "label": "CIFAR-10 EDM",
            **grid_files(
                write_grid(tmp_path / "b.csv", peak(5, 4), steps=18, ts=(3, 4, 5), layers=15)
            ),
            "paper": "cifar10_edm",
        },
        {"label": "Tiny DDPM", **grid_files(tmp_path / "no.csv"), "paper": "tiny_imagenet_ddpm"},
        {
            "label": "digits",
            **grid_files(write_grid(tmp_path / "c.csv", peak(2, 6))),
            "paper": None,
        },
    ]
    frame = write_table9(columns, tmp_path / "t9.csv", tmp_path / "t9.md")
    get = {(r.model, r.quantity): r for r in frame.itertuples()}
    assert get["CIFAR-10 DDPM", "layer"].measured == "7/12 (block7)"
    assert get["CIFAR-10 DDPM", "layer"].paper == "7/12 (1st block@16)"
    assert get["CIFAR-10 DDPM", "layer"].matches is True
    assert get["CIFAR-10 DDPM", "timestep"].measured == "11/1000"
    assert get["CIFAR-10 EDM", "layer"].matches is False  # 5/15 vs the paper's 6/15
    assert get["CIFAR-10 EDM", "timestep"].matches is True
    assert get["Tiny DDPM", "layer"].measured == "not run"
    assert get["Tiny DDPM", "layer"].paper == "2/12 (2nd block@8)"
    assert get["digits", "layer"].paper == ""
    assert "Table 9" in (tmp_path / "t9.md").read_text()


def choose(grid, layer, t):
    """Overwrite the grid search's choice file: a pair that is not the CSV's best cell."""
    write_json(
        grid.with_suffix(".json"),
        layer=layer,
        layer_name=f"block{layer}",
        t=t,
        steps=1000,
        sigma=0.01 * t,
        test_accuracy=88.5,
    )


def test_the_winner_is_read_from_the_grid_searchs_choice_file(tmp_path):
    grid = write_grid(tmp_path / "grid/epoch5.csv", peak(7, 11))
    choose(grid, layer=6, t=6)
    frame = table9([{"label": "x", **grid_files(grid), "paper": "cifar10_ddpm"}])
    assert frame.iloc[0]["measured"] == "6/12 (block6)"
    assert frame.iloc[1]["measured"] == "6/1000"
    au = write_align(tmp_path / "au.csv", [0.2] * 12, [-1.0] * 12)
    runs = [{"label": "x", "align_uniform": au, **grid_files(grid), "paper": None}]
    values = dict(zip(*label_free_table(runs)[["quantity", "value"]].T.values, strict=True))
    assert values["grid-search winner (any timestep)"] == "6/12 (block6), t 6/1000"
    assert values["winner accuracy (%)"] == 88.5


def test_a_grid_without_its_choice_file_has_no_winner(tmp_path):
    """No recomputation from the CSV: without the grid search's choice, Table 9 says not run."""
    grid = write_grid(tmp_path / "grid/epoch5.csv", peak(7, 11))
    grid.with_suffix(".json").unlink()
    frame = table9([{"label": "x", **grid_files(grid), "paper": "cifar10_ddpm"}])
    assert frame.iloc[0]["measured"] == "not run"


def write_align(path, alignment, uniformity, t=11, steps=1000):
    rows = [
        {
            "layer": k + 1,
            "layer_name": f"block{k + 1}",
            "t": t,
            "steps": steps,
            "sigma": 0.1,
            "alignment": a,
            "uniformity": u,
        }
        for k, (a, u) in enumerate(zip(alignment, uniformity, strict=True))
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_label_free_criterion():
    frame = pd.DataFrame(
        {"layer": [1, 2, 3], "alignment": [0.1, 0.5, 1.5], "uniformity": [-0.5, -2.0, -3.8]}
    )
    assert label_free_choice(frame)["layer"] == 3  # alignment + uniformity: -0.4, -1.5, -2.3
    assert label_free_choice(frame, uniformity_weight=0.1)["layer"] == 1  # 0.05, 0.3, 1.12


def test_label_free_table(tmp_path):
    alignment = [0.2, 0.4, 0.5, 1.2] + [1.5] * 8
    uniformity = [-0.5, -1.5, -2.6, -2.0] + [-1.0] * 8
    runs = [
        {
            "label": "DDPM",
            "align_uniform": write_align(tmp_path / "au.csv", alignment, uniformity),
            **grid_files(write_grid(tmp_path / "g.csv", peak(3, 11))),
            "paper": "cifar10_ddpm",
        },
        {"label": "EDM", "align_uniform": tmp_path / "none.csv", "grid": None, "paper": None},
    ]
    frame = write_label_free_table(runs, tmp_path / "lf.csv", tmp_path / "lf.md")
    get = {(r.run, r.quantity): r.value for r in frame.itertuples()}
    assert get["DDPM", "label-free layer"] == "3/12 (block3)"
    assert get["DDPM", "label-free agrees with the grid"] is True
    assert get["DDPM", "its linear probe accuracy (%)"] == pytest.approx(90.0)
    assert get["DDPM", "paper's layer (Table 9)"] == "7/12 (1st block@16)"
    assert get["EDM", "label-free layer"] == "not run"
    assert get["EDM", "grid-search winner"] == "not run"
    assert "alignment + 1 × uniformity" in (tmp_path / "lf.md").read_text()


def test_label_free_table_keeps_tiny_values_and_rounds_accuracies(tmp_path):
    """Issue 22 item 8: a near-collapsed alignment printed as 0.0, accuracies as 77.7777…"""
    alignment = [3.2e-8, 4.123e-5] + [1.0] * 10
    uniformity = [-0.0051, -0.06] + [-0.001] * 10
    grid = write_grid(tmp_path / "g.csv", peak(1, 11))
    frame = grid.with_suffix(".json")
    choice = json.loads(frame.read_text())
    table = pd.read_csv(grid)
    table["test_accuracy"] = 700 / 9  # 77.777…
    table.to_csv(grid, index=False)
    frame.write_text(json.dumps({**choice, "test_accuracy": 700 / 9}))
    runs = [
        {
            "label": "digits_ddpm",
            "align_uniform": write_align(tmp_path / "au.csv", alignment, uniformity),
            **grid_files(grid),
            "paper": None,
        }
    ]
    get = {r.quantity: r.value for r in label_free_table(runs).itertuples()}
    assert get["label-free layer"] == "2/12 (block2)"  # 4.1e-5 − 0.06 beats 3.2e-8 − 0.0051
    assert get["its alignment"] == 4.123e-5 and get["its uniformity"] == -0.06
    assert get["its linear probe accuracy (%)"] == 77.78
    assert get["its accuracy (%)"] == 77.78 and get["winner accuracy (%)"] == 77.78


def test_settings_tables_compare_with_the_paper(tmp_path):
    probe = {
        "epochs": 15,
        "lr": 1.0e-3,
        "batch_size": 512,
        "optimizer": "adam",
        "schedule": "cosine",
        "augment": {"hflip": True, "crop_padding": 4},
        "weight_decay": 0.0,
    }
    frame = write_settings_table(
        "table6",
        [
            {"label": "CIFAR-10 EDM", "config": probe, "paper": "cifar10_edm"},
            {"label": "CIFAR-10 DDPM", "config": {**probe, "epochs": 3}, "paper": "cifar10_ddpm"},
        ],
        tmp_path / "t6.csv",
        tmp_path / "t6.md",
    )
    get = {(r.model, r.quantity.split(" [")[0]): r for r in frame.itertuples()}
    for quantity in (
        "training epochs",
        "base learning rate",
        "batch size (global)",
        "optimizer",
        "learning rate schedule",
        "RandomHorizontalFlip",
        "RandomCrop padding",
    ):
        assert get["CIFAR-10 EDM", quantity].matches is True, quantity
    assert get["CIFAR-10 DDPM", "training epochs"].matches is False
    assert get["CIFAR-10 DDPM", "training epochs"].paper == 10
    assert get["CIFAR-10 EDM", "weight_decay"].paper == ""
    finetune = settings_table(
        "table7", [{"label": "DiT", "config": {"lr": 8e-5, "epochs": 50}, "paper": "cifar10_dit"}]
    )
    get = {r.quantity.split(" [")[0]: r for r in finetune.itertuples()}
    assert get["base learning rate"].matches is True
    assert get["batch size (global)"].measured == 512  # ClassifierTrainingConfig's default
    assert get["batch size (global)"].matches is False
    assert get["batch size (global)"].paper == 64  # 8 per GPU × 8 GPUs
    scratch = settings_table(
        "table8",
        [
            {
                "label": "WRN",
                "config": {"optimizer": "sgd", "lr": 0.1, "epochs": 200, "warmup_epochs": 5},
                "paper": "wrn",
            }
        ],
    )
    assert scratch[scratch["matches"] != ""]["matches"].all()


def test_a_miniature_number_never_sits_in_a_cifar10_row(tmp_path):
    """tables.models may map cifar10_edm to a digits run: its numbers get no CIFAR-10 row, no Δ."""
    digits = tmp_path / "results/digits/digits_ddpmpp_edm"
    results = {
        "cifar10_edm": {
            "linear": write_json(digits / "linear/epoch4.json", test_accuracy=88.0),
            "finetune": write_json(digits / "finetune/epoch4.json", test_accuracy=97.0),
        },
        "cifar10_wrn": {
            "supervised": write_json(
                tmp_path / "results/digits/baselines/wrn.json", test_accuracy=98.0
            )
        },
    }
    frame = write_comparison_table("table2", results, tmp_path / "t2.csv", tmp_path / "t2.md")
    for method, evaluation in [
        ("DDAE (EDM)", "Linear"),
        ("DDAE (EDM)", "Fine-tune"),
        ("WideResNet-28-10", "Supervised"),
    ]:
        cell = row(frame, method, evaluation, section="CIFAR-10")
        assert cell["measured"] == "" and cell["difference"] == "", (method, evaluation)
        assert cell["status"] == report.OTHER_DATASET and "digits" in cell["note"]
    markdown = (tmp_path / "t2.md").read_text()
    assert "88.0" not in markdown and "97.0" not in markdown and "measured on digits" in markdown


def test_a_miniature_number_never_sits_in_a_transfer_row(tmp_path):
    """The section "CIFAR-10, with ImageNet transfer" is CIFAR-10 too: a digits DiT stand-in's
    accuracy gets no value and no Δ there."""
    dit = tmp_path / "results/digits/digits_dit"
    results = {
        "cifar10_dit": {
            "linear": write_json(dit / "linear/epoch1.json", test_accuracy=8.9),
            "finetune": write_json(dit / "finetune/epoch1.json", test_accuracy=5.0),
        }
    }
    frame = write_comparison_table("table3", results, tmp_path / "t3.csv", tmp_path / "t3.md")
    for evaluation in ("Linear", "Fine-tune"):
        cell = row(frame, "DDAE (DiT-XL/2)", evaluation, section="CIFAR-10, with ImageNet transfer")
        assert cell["measured"] == "" and cell["difference"] == "", evaluation
        assert cell["status"] == report.OTHER_DATASET and "digits" in cell["note"]


def test_table9_does_not_match_a_miniature_grid_against_cifar10(tmp_path):
    grid = write_grid(tmp_path / "results/digits/run/grid/epoch2.csv", peak(7, 11))
    columns = [{"label": "cifar10_ddpm", **grid_files(grid), "paper": "cifar10_ddpm"}]
    frame = write_table9(columns, tmp_path / "t9.csv", tmp_path / "t9.md")
    assert set(frame["model"]) == {"cifar10_ddpm: measured on digits, not compared"}
    assert (frame["paper"] == "").all() and (frame["matches"] == "").all()
    runs = [{"label": "digits_ddpm", **grid_files(grid), "paper": "cifar10_ddpm"}]
    quantities = set(label_free_table(runs)["quantity"])
    assert "grid-search winner (any timestep)" in quantities
    assert "paper's layer (Table 9)" not in quantities


def test_a_stand_in_cifar10_number_never_sits_in_a_cifar10_row(tmp_path):
    """The paper-shape miniature names its stand-ins cifar10 / tiny_imagenet; the marker that
    `write_stand_in_dataset` leaves beside them keeps their numbers out of the paper's rows
    (no value, no Δ) and out of Table 9's comparison. The same files without the marker (the
    real dataset) are compared as usual."""
    from ddae.paper_shape import write_stand_in_dataset

    write_stand_in_dataset(tmp_path / "resources/data/cifar10", 8, 10)
    run = tmp_path / "results/cifar10/cifar10_edm"
    results = {
        "cifar10_edm": {"linear": write_json(run / "linear/epoch4.json", test_accuracy=20.0)}
    }
    frame = write_comparison_table("table2", results, tmp_path / "t2.csv", tmp_path / "t2.md")
    cell = row(frame, "DDAE (EDM)", "Linear", section="CIFAR-10")
    assert cell["measured"] == "" and cell["difference"] == ""
    assert cell["status"] == report.OTHER_DATASET and "stand-in" in cell["note"]
    grid = write_grid(tmp_path / "results/cifar10/cifar10_ddpm/grid/epoch2.csv", peak(7, 11))
    columns = [{"label": "cifar10_ddpm", **grid_files(grid), "paper": "cifar10_ddpm"}]
    table9 = write_table9(columns, tmp_path / "t9.csv", tmp_path / "t9.md")
    assert (table9["paper"] == "").all() and "stand-in" in table9["model"].iloc[0]

    (tmp_path / "resources/data/cifar10/stand_in.json").unlink()  # the real CIFAR-10
    frame = write_comparison_table("table2", results, tmp_path / "t2.csv", tmp_path / "t2.md")
    cell = row(frame, "DDAE (EDM)", "Linear", section="CIFAR-10")
    assert cell["measured"] == 20.0 and cell["status"] == "measured"


def test_table9_markdown_shows_paper_columns_only_beside_paper_values(tmp_path):
    """Issue 22, item 8: a table of miniature rows had empty "(paper)" columns under a caption
    saying "beside the paper's"; it now drops them and says why no row is compared."""
    grid = write_grid(tmp_path / "results/digits/run/grid/epoch2.csv", peak(7, 11))
    columns = [{"label": "digits_ddpm", **grid_files(grid), "paper": "cifar10_ddpm"}]
    write_table9(columns, tmp_path / "t9.csv", tmp_path / "t9.md")
    text = (tmp_path / "t9.md").read_text()
    assert "(paper)" not in text and "beside the paper's" not in text
    assert "No row is compared with the paper's pairs" in text
    header = text.splitlines()[2]
    assert header == "| model | layer (ours) | timestep (ours) | σ | acc. % |"

    compared = write_grid(tmp_path / "results/cifar10/run/grid/epoch2.csv", peak(7, 11))
    columns = [{"label": "cifar10_ddpm", **grid_files(compared), "paper": "cifar10_ddpm"}]
    write_table9(columns, tmp_path / "t9.csv", tmp_path / "t9.md")
    text = (tmp_path / "t9.md").read_text()
    assert "beside the paper's" in text and "| timestep (paper) |" in text
    assert text.splitlines()[4].count("|") == 8  # model + 6 cells + the closing bar
