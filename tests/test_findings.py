"""ddae.findings: the paper's qualitative findings from result files, and broken extractors that
fail them. The same checks on the smoke run's own outputs are in tests/test_workflow.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import result_provenance

from ddae.configs import ConfigError
from ddae.findings import Thresholds, findings, model_findings
from ddae.result_files import ResultFileError

LAYERS, TS = (1, 2, 3, 4), (1, 7, 13)


def write_grid(path, accuracy):
    rows = [
        {
            "layer": k,
            "layer_name": f"b{k}",
            "t": t,
            "steps": 18,
            "sigma": t / 10,
            "test_accuracy": accuracy(k, t),
        }
        for t in TS
        for k in LAYERS
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def write_json(path, **values):
    path.write_text(json.dumps({**values, **result_provenance(values)}))
    return path


def trained(k, t):  # Figure 2's shape: best at a middle layer and low noise, chance when noisy
    return {1: 50.0, 7: 40.0, 13: 11.0}[t] - 2.0 * abs(k - 2)


def untrained(k, t):
    return {1: 20.0, 7: 18.0, 13: 10.0}[t] - abs(k - 2)


@pytest.fixture
def files(tmp_path):
    return {
        "label": "digits",
        "grid": write_grid(tmp_path / "grid.csv", trained),
        "random_init_grid": write_grid(tmp_path / "random.csv", untrained),
        "pixels": write_json(tmp_path / "pixels.json", test_accuracy=89.0, num_classes=10),
        "linear": write_json(tmp_path / "linear.json", test_accuracy=80.0),
        "finetune": write_json(tmp_path / "finetune.json", test_accuracy=95.0),
        "supervised": write_json(tmp_path / "wrn.json", test_accuracy=97.0),
    }


def verdicts(record):
    return {check["finding"]: check["passed"] for check in record["checks"]}


def test_findings_hold_for_a_trained_extractor(files, tmp_path):
    record = findings([files], {}, "toy", tmp_path / "f.json", tmp_path / "f.md")
    assert record["passed"] and all(verdicts(record["models"][0]).values())
    model = record["models"][0]
    gain = next(c for c in model["checks"] if c["finding"] == "pretraining_beats_random_init")
    assert gain["value"] == 30.0  # 50 − 20
    assert model["reference_points"]["linear probe on raw pixels"] == 89.0
    assert model["reference_points"]["chance"] == 10.0
    assert json.loads((tmp_path / "f.json").read_text()) == record
    markdown = (tmp_path / "f.md").read_text()
    assert "all findings hold" in markdown and "toy" in markdown and "Figure 4" in markdown


@pytest.mark.parametrize(
    ("broken", "fails"),
    [
        # untrained weights: the "pretrained" grid is the random-init network's
        (lambda k, t: untrained(k, t), {"pretraining_beats_random_init", "above_chance"}),
        # noise not applied: every t gives the same features, hence the same accuracy
        (lambda k, t: trained(k, 1), {"noise_level_matters", "grid_not_flat"}),
        # noise inverted (σ_max for σ_min): the noisiest t probes best
        (lambda k, t: trained(k, {1: 13, 7: 7, 13: 1}[t]), {"best_t_not_noisiest"}),
        # collapsed features: chance everywhere
        (
            lambda k, t: 10.0,
            {
                "pretraining_beats_random_init",
                "above_chance",
                "grid_not_flat",
                "noise_level_matters",
            },
        ),
    ],
    ids=["untrained", "noise-not-applied", "noise-inverted", "collapsed"],
)
def test_broken_extractors_fail_the_findings(files, tmp_path, broken, fails):
    files["grid"] = write_grid(tmp_path / "broken.csv", broken)
    record = model_findings(files, Thresholds())
    failed = {name for name, passed in verdicts(record).items() if not passed}
    assert failed == fails


def test_moderate_noise_optimum_is_checked_where_it_holds_and_said_where_not(files, tmp_path):
    """Issue 22, item 7: `best_t_not_noisiest` passed with the least noisy t as "features at
    moderate noise". An interior best t is now its own finding; a best t at the grid's end puts
    the claim under "Not shown at this scale" with the measured t, never under a pass."""
    record = findings([files], {}, "toy", tmp_path / "f.json", tmp_path / "f.md")
    model = record["models"][0]
    assert "moderate_noise_optimum" not in verdicts(model)  # best t = 1, the least noisy
    assert model["not_shown"] == [
        "digits: the moderate-noise optimum (Figure 2, Sec. 4: the best t lies strictly between "
        "the least and the most noisy level). Here the best t is 1 of the grid's [1, 7, 13]."
    ]
    markdown = (tmp_path / "f.md").read_text()
    shown = markdown.split("## Not shown at this scale")[1]
    assert "Here the best t is 1" in shown and "moderate noise)" not in markdown

    files["grid"] = write_grid(
        tmp_path / "interior.csv", lambda k, t: trained(k, {1: 7, 7: 1, 13: 13}[t])
    )
    record = findings([files], {}, "toy", tmp_path / "f.json", tmp_path / "f.md")
    model = record["models"][0]
    assert verdicts(model)["moderate_noise_optimum"] and model["not_shown"] == []
    assert (
        next(c for c in model["checks"] if c["finding"] == "moderate_noise_optimum")["value"] == 7
    )


def test_findings_over_seeds_are_mean_and_sd_and_hold_only_in_every_seed(files, tmp_path):
    """Issue 22: every finding as mean ± sd over the seeds, holding on the mean with every seed
    in the same direction. Seed 2's pretrained grid is 6 points lower everywhere."""
    lower = dict(files, grid=write_grid(tmp_path / "low.csv", lambda k, t: trained(k, t) - 6.0))
    interior = dict(
        files,
        grid=write_grid(tmp_path / "mid.csv", lambda k, t: trained(k, {1: 7, 7: 1}.get(t, t))),
    )
    model = {"label": "digits", "seeds": [files, lower, interior]}
    record = findings([model], {}, "toy", tmp_path / "f.json", tmp_path / "f.md")
    result = record["models"][0]
    gain = next(c for c in result["checks"] if c["finding"] == "pretraining_beats_random_init")
    assert gain["values"] == [30.0, 24.0, 30.0] and gain["value"] == 28.0
    assert gain["sd"] == 3.46 and gain["passed"]  # stdev(30, 24, 30) = 2 * sqrt(3)
    assert result["seeds"] == 3 and result["reference_points"]["DDAE best grid cell"] == 48.0
    # interior at one seed only: not a finding, said with each seed's best t
    assert "moderate_noise_optimum" not in verdicts(result)
    assert "the best t per seed is [1, 1, 7]" in result["not_shown"][0]
    markdown = (tmp_path / "f.md").read_text()
    assert "mean ± sd over 3 seeds" in markdown
    assert "| 28.0 ± 3.46 (30.0, 24.0, 30.0) |" in markdown

    # a seed against the others' direction fails the finding, although the mean clears it
    against = dict(files, grid=write_grid(tmp_path / "bad.csv", untrained))
    model = {"label": "digits", "seeds": [files, files, files, against]}
    result = findings([model], {}, "toy", tmp_path / "f.json", tmp_path / "f.md")["models"][0]
    gain = next(c for c in result["checks"] if c["finding"] == "pretraining_beats_random_init")
    assert gain["value"] == 22.5 and not gain["passed"]


def test_finetune_below_linear_fails(files, tmp_path):
    files["finetune"] = write_json(tmp_path / "bad.json", test_accuracy=70.0)
    assert not verdicts(model_findings(files, Thresholds()))["finetune_at_least_linear"]


def test_missing_results_are_named(files, tmp_path):
    files["random_init_grid"] = tmp_path / "nowhere.csv"
    with pytest.raises(ResultFileError, match="nowhere.csv"):
        model_findings(files, Thresholds())
    with pytest.raises(ConfigError, match="min_gain"):
        findings([files], {"min_gain": 3}, "toy", tmp_path / "f.json", tmp_path / "f.md")
