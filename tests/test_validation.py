"""The validation target (issue 24; `ddae.validation`, workflow/rules/validation.smk): on
config.yaml ``results/validation.md`` plans the official imports, CIFAR-10, the two probes at
Table 9's pairs and one FID, nothing else; its verdicts follow the tolerances and refuse numbers
not measured the paper's way; a probe at a named pair and the run's own probe at the same pair
reuse each other (`ddae.probe_pairs`); and the whole target runs in miniature on stand-ins,
saying that such a run validates nothing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import tiny_probe_run
from test_benchmarks import benchmark_script
from test_workflow import PAPER_CONFIG, REPO, SMOKE_CONFIG, planned_jobs, snakemake, workdir_with

from ddae.checkpoints import load_network
from ddae.configs import ConfigError, from_mapping, to_mapping
from ddae.official import OfficialImportError
from ddae.official.stand_ins import write_stand_in
from ddae.paper_shape import miniature_config, stand_in_marker, write_stand_in_dataset
from ddae.pipeline.layout import Layout
from ddae.probe_pairs import named_pair_pattern, probe_identity, reuse_probe, sibling_probe
from ddae.probing.linear_probe import linear_probe
from ddae.settings.probes import LinearProbeConfig
from ddae.sources import ImageSource
from ddae.validation import (
    FAIL,
    NOT_COMPARABLE,
    PASS,
    markdown,
    paper_pair,
    validate,
    validation_plan,
)

EDM, DDPM = PAPER_CONFIG["pretraining"]["cifar10_edm"], PAPER_CONFIG["pretraining"]["cifar10_ddpm"]
EDM_DIR, DDPM_DIR = "results/cifar10/cifar10_edm", "results/cifar10/cifar10_ddpm"


stage_file = Layout(PAPER_CONFIG).stage_file  # the final checkpoint's result, on config.yaml


# --- planning ----------------------------------------------------------------------------------


def test_table9_pairs_in_our_numbering():
    assert paper_pair("cifar10_edm") == {"layer": 6, "layers": 15, "t": 4, "steps": 18}
    assert paper_pair("cifar10_ddpm") == {"layer": 7, "layers": 12, "t": 11, "steps": 1000}


def test_plan_names_the_probes_at_table9s_pairs_and_table2s_fid():
    plan = validation_plan(
        PAPER_CONFIG["tables"]["models"], PAPER_CONFIG["pretraining"], stage_file
    )
    assert [(entry["check"], entry["run"], entry["result"]) for entry in plan] == [
        ("edm_linear_probe", "cifar10_edm", f"{EDM_DIR}/linear/layer6_t4/epoch4000.json"),
        ("ddpm_linear_probe", "cifar10_ddpm", f"{DDPM_DIR}/linear/layer7_t11/epoch2000.json"),
        ("edm_fid", "cifar10_edm", f"{EDM_DIR}/fid/epoch4000.json"),
    ]
    assert [entry["source"]["official"] for entry in plan] == ["edm", "ddpm", "edm"]


def test_plan_refuses_a_config_without_the_papers_pair():
    """The smoke config's tiny DDPM++ has 4 decoder blocks: no layer 6 to probe."""
    with pytest.raises(ConfigError, match=r"digits_ddpmpp_edm.*layer 6/15, t = 4/18.*4 decoder"):
        validation_plan(SMOKE_CONFIG["tables"]["models"], SMOKE_CONFIG["pretraining"], stage_file)
    with pytest.raises(ConfigError, match=r"tables\.models\.cifar10_edm"):
        validation_plan({}, PAPER_CONFIG["pretraining"], stage_file)


def test_paper_config_plans_exactly_the_validation_jobs(tmp_path):
    output = snakemake(workdir_with(tmp_path, PAPER_CONFIG), "-n", "results/validation.md")
    assert planned_jobs(output) == Counter(
        {
            ("download_official_file", None): 1,  # edm-cifar10-32x32-uncond-vp.pkl
            ("download_official_folder", None): 1,  # google/ddpm-cifar10-32
            ("import_official", "cifar10_edm"): 1,
            ("import_official", "cifar10_ddpm"): 1,
            ("download_dataset", None): 1,  # CIFAR-10
            ("prepare_dataset", None): 1,
            ("download_inception", None): 1,
            ("fid_reference", None): 1,  # CIFAR-10's training statistics
            ("linear_probe_at_pair", "cifar10_edm"): 1,
            ("linear_probe_at_pair", "cifar10_ddpm"): 1,
            ("sample_fid", "cifar10_edm"): 1,
            ("validation", None): 1,
        }
    )
    assert "wildcards: dataset=cifar10, run=cifar10_edm, layer=6, t=4, epoch=4000" in output
    assert "wildcards: dataset=cifar10, run=cifar10_ddpm, layer=7, t=11, epoch=2000" in output
    assert "resources/downloads/official/edm-cifar10-32x32-uncond-vp.pkl" in output
    assert "resources/downloads/official/ddpm-cifar10-32" in output

    # README's cost of the target: paper_cost.py's work model of these jobs at the H200 rates
    script = benchmark_script("paper_cost")
    paper_cost = next(script)
    script.close()
    rates = json.loads((REPO / "benchmarks/h200_forward_rates.json").read_text())["rates"]
    jobs = paper_cost.parse_dry_run(output)
    table = paper_cost.cost_table(jobs, paper_cost.Workload(PAPER_CONFIG, tmp_path), rates)
    minutes = {stage: row["gpu_hours"] * 60 for stage, row in table.items()}
    assert minutes == pytest.approx(
        {"sample_fid": 8.41, "linear_probe_at_pair": 3.65 + 0.95, "fid_reference": 0}, abs=0.01
    )
    assert sum(row["missing"] for row in table.values()) == 2  # Inception: no rate yet


# --- verdicts ----------------------------------------------------------------------------------


def probe_record(run: dict, layer: int, t: int, accuracy: float, **config) -> dict:
    """A linear-probe result as `ddae.probing.linear_probe` writes it, with the run's config."""
    probe = from_mapping(LinearProbeConfig, {**run["evaluation"]["linear_probe"], **config})
    steps = run["evaluation"]["steps"]
    return {"test_accuracy": accuracy, "layer": layer, "t": t, "steps": steps,
            "config": to_mapping(probe), "ran_with": {"device": "cuda", "bf16": True},
            "created_by": "tests", "checkpoint": "x.pt"}  # fmt: skip


def fid_record(fid: float, **changes) -> dict:
    """An FID result as `ddae.fid.sample_and_score` writes it, with cifar10_edm's config."""
    sampling = EDM["evaluation"]["fid"]
    record = {"fid": fid, "extractor": "inception", "samples": sampling["samples"],
              "sampler": sampling["sampler"], "steps": sampling["steps"],
              "clip_denoised": sampling["clip_denoised"], "reference_count": 50_000,
              "created_by": "tests", "checkpoint": "x.pt"}  # fmt: skip
    return {**record, **changes}


def validated(workdir: Path, edm: dict, ddpm: dict, fid: dict) -> dict:
    """`validate` on result files written under ``workdir`` at the plan's paths."""
    plan = validation_plan(
        PAPER_CONFIG["tables"]["models"], PAPER_CONFIG["pretraining"], stage_file
    )
    results = {}
    for entry, record in zip(plan, (edm, ddpm, fid), strict=True):
        path = workdir / entry["result"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record))
        results[entry["check"]] = str(path)
        entry["result"] = str(path)
    bench = workdir / "sample_fid.benchmark.tsv"
    bench.write_text("s\th:m:s\tmax_rss\n512.5\t0:08:32\t1000\n")
    benchmarks = {"sample_fid cifar10_edm": str(bench), "fid_reference cifar10": "missing.tsv"}
    return validate(plan, results, benchmarks)


def test_numbers_within_their_tolerances_pass(tmp_path):
    report = validated(
        tmp_path,
        probe_record(EDM, 6, 4, 95.2),
        probe_record(DDPM, 7, 11, 89.4),
        fid_record(2.05),
    )
    assert [row["verdict"] for row in report["checks"]] == [PASS, PASS, PASS]
    assert report["verdict"] == PASS and report["validates_the_paper"]
    assert [row["reference"] for row in report["checks"]] == [95.9, 88.5, 1.97]
    assert report["checks"][2]["paper_prints"] == 2.0
    text = markdown(report)
    assert "**3 PASS, 0 FAIL** of 3 numbers." in text
    assert "| EDM linear probe at layer 6/15, t = 4/18 | cifar10_edm | 95.20 % | 95.90 % |" in text
    assert "± 1.00 % | -0.70 % | PASS |" in text
    assert "1.970 (paper prints 2.0) | ± 0.100 | +0.080 | PASS |" in text
    assert "| sample_fid cifar10_edm | 8.5 min (512 s) |" in text
    assert "| fid_reference cifar10 | not recorded |" in text
    assert "- EDM linear probe: device cuda (bf16 on, tf32 off, channels_last off)" in text
    assert (
        "standard error of an accuracy of 95.9 % on CIFAR-10's 10,000 test images is 0.20" in text
    )


def test_a_number_outside_its_tolerance_fails(tmp_path):
    report = validated(
        tmp_path,
        probe_record(EDM, 6, 4, 94.85),  # 1.05 points below
        probe_record(DDPM, 7, 11, 88.5),
        fid_record(2.08),  # 0.11 above
    )
    assert [row["verdict"] for row in report["checks"]] == [FAIL, PASS, FAIL]
    assert report["verdict"] == FAIL
    assert "**1 PASS, 2 FAIL** of 3 numbers (EDM linear probe, EDM FID" in markdown(report)


def test_numbers_not_measured_the_papers_way_are_not_compared(tmp_path):
    report = validated(
        tmp_path,
        probe_record(EDM, 6, 4, 95.9, epochs=10),  # Table 6: 15 epochs for EDM
        probe_record(DDPM, 7, 11, 88.5),
        fid_record(1.97, samples=10_000),
    )
    assert [row["verdict"] for row in report["checks"]] == [NOT_COMPARABLE, PASS, NOT_COMPARABLE]
    assert report["verdict"] == NOT_COMPARABLE and not report["validates_the_paper"]
    assert report["checks"][0]["not_comparable"] == ["protocol: epochs 10, Tables 6 and 9: 15"]
    assert report["checks"][2]["not_comparable"] == ["protocol: samples 10000, EDM: 50000"]
    text = markdown(report)
    assert "**1 PASS, 0 FAIL** of 3 numbers; **not a full validation**" in text
    assert "| NOT COMPARABLE (would be PASS) |" in text


def test_stand_in_data_validates_nothing(tmp_path):
    write_stand_in_dataset(stand_in_marker(tmp_path, "cifar10").parent, 8, 10)
    report = validated(
        tmp_path,
        probe_record(EDM, 6, 4, 95.9),
        probe_record(DDPM, 7, 11, 88.5),
        fid_record(1.97),
    )
    assert {row["verdict"] for row in report["checks"]} == {NOT_COMPARABLE}
    assert (
        markdown(report)
        .splitlines()[2]
        .startswith(
            "**NOT A VALIDATION: this run validates nothing.** No number was measured the paper's "
            "way (measured on the miniature's synthetic stand-in for cifar10, not on CIFAR-10)"
        )
    )


# --- named pairs -----------------------------------------------------------------------------


def test_named_pair_paths():
    own = "results/{dataset}/{run}/linear/epoch{epoch}.json"
    assert (
        named_pair_pattern(own)
        == "results/{dataset}/{run}/linear/layer{layer}_t{t}/epoch{epoch}.json"
    )
    named = Path("results/cifar10/r/linear/layer6_t4/epoch9.json")
    assert sibling_probe("results/cifar10/r/linear/epoch9.json", 6, 4) == named
    assert sibling_probe(named, 6, 4) == Path("results/cifar10/r/linear/epoch9.json")  # fmt: skip


def test_a_probe_is_reused_only_when_it_is_the_same_computation(tmp_path):
    checkpoint, train, test = tiny_probe_run(tmp_path, 40, 20)
    probe = {"epochs": 1, "batch_size": 20}
    named = tmp_path / "linear/layer3_t11/epoch1.json"
    source = ImageSource(train, test)
    record = linear_probe(
        checkpoint, source, 3, 11, 100, probe, named, named.with_suffix(".metrics.jsonl"),
        "cpu", False,
    )  # fmt: skip
    identity = probe_identity(str(checkpoint), source.record(), 3, 11, 100, probe, "cpu")
    assert identity == {key: record[key] for key in identity}  # what the writer records

    own = tmp_path / "linear/epoch1.json"
    assert sibling_probe(own, 3, 11) == named

    def identity_with(changes: dict, device: str = "cpu") -> dict:
        config = {**probe, **changes}
        return probe_identity(str(checkpoint), source.record(), 3, 11, 100, config, device)

    assert not reuse_probe(own, named, identity_with({"lr": 2e-3})) and not own.exists()
    assert not reuse_probe(own, named, {**identity, "t": 12})
    on_gpu = identity_with({}, "cuda")
    assert not reuse_probe(own, named, on_gpu)  # another device: not the same computation
    assert reuse_probe(own, named, identity)
    copied = json.loads(own.read_text())
    assert copied == {**record, "reused_from": str(named)}
    assert (tmp_path / "linear/epoch1.metrics.jsonl").read_text() == named.with_suffix(
        ".metrics.jsonl"
    ).read_text()


# --- stand-ins and the miniature -------------------------------------------------------------


def test_official_stand_ins_are_random_networks_of_the_configured_shape(tmp_path):
    spec = miniature_config(PAPER_CONFIG)["pretraining"]["cifar10_edm"]["network"]
    net, framework, run = load_network(write_stand_in("edm", tmp_path / "edm.pt", spec, seed=1))
    assert run["framework"] == {"kind": "edm", "sigma_data": 0.5}
    assert len(net.decoder_blocks()) == 15 and run["network"]["model_channels"] == 16
    with pytest.raises(OfficialImportError, match="a ddpm stand-in needs arch 'ddpm_unet'"):
        write_stand_in("ddpm", tmp_path / "ddpm.pt", spec)


def validation_miniature(workdir: Path) -> Path:
    """config.yaml in miniature (`ddae.paper_shape.miniature_config`: every decoder layer, t
    and sampler kept) with random stand-ins for the two official checkpoints and a synthetic
    stand-in for CIFAR-10; cifar10_ddpm probes at Table 9's fixed pair (7, 11) instead of its
    grid, so its own probe is the validation's (reused, not run twice)."""
    mini = miniature_config(PAPER_CONFIG)
    for run, kind in (("cifar10_ddpm", "ddpm"), ("cifar10_edm", "edm")):
        mini["pretraining"][run]["source"] = {"stand_in": kind, "seed": 0}
    mini["pretraining"]["cifar10_ddpm"]["evaluation"]["layer_t"] = {"layer": 7, "t": 11}
    mini["pretraining"]["cifar10_edm"]["evaluation"]["fid"].update(samples=16, batch_size=16)
    write_stand_in_dataset(stand_in_marker(workdir, "cifar10").parent, 32, 10)
    return workdir_with(workdir, mini)


@pytest.mark.slow
def test_validation_runs_in_miniature_and_says_it_validates_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    workdir = validation_miniature(tmp_path)
    output = snakemake(workdir, "--cores", "2", "results/validation.md")
    ran = Counter(
        rule for rule, _ in planned_jobs(output.replace("localrule ", "rule ")).elements()
    )
    assert ran == Counter(  # the dataset is there already: no download, no preparation
        {"stand_in_checkpoint": 2, "linear_probe_at_pair": 2, "fid_reference": 1,
         "sample_fid": 1, "validation": 1}
    )  # fmt: skip
    text = (workdir / "results/validation.md").read_text()
    assert text.splitlines()[2].startswith("**NOT A VALIDATION: this run validates nothing.**")
    assert "a randomly initialised stand-in checkpoint, not the official one" in text
    assert "the miniature's synthetic stand-in for cifar10" in text
    report = json.loads((workdir / "results/validation.json").read_text())
    assert [row["verdict"] for row in report["checks"]] == [NOT_COMPARABLE] * 3
    assert [row["tolerance"] for row in report["checks"]] == [1.0, 1.0, 0.1]
    timed = {stage["job"] for stage in report["stages"] if stage["seconds"] is not None}
    assert timed == {
        "stand_in_checkpoint cifar10_edm", "stand_in_checkpoint cifar10_ddpm",
        "linear_probe_at_pair cifar10_edm layer 6, t = 4",
        "linear_probe_at_pair cifar10_ddpm layer 7, t = 11",
        "fid_reference cifar10", "sample_fid cifar10_edm",
    }  # fmt: skip
    named = json.loads((workdir / DDPM_DIR / "linear/layer7_t11/epoch1.json").read_text())
    assert (named["layer"], named["t"], named["steps"]) == (7, 11, 1000)

    # Table 3's probe of cifar10_ddpm (its configured pair is Table 9's) is the same job: reused
    snakemake(workdir, "--cores", "1", "results/cifar10/cifar10_ddpm/linear/epoch1.json")
    own = json.loads((workdir / DDPM_DIR / "linear/epoch1.json").read_text())
    assert own["reused_from"].endswith("linear/layer7_t11/epoch1.json")
    assert own["test_accuracy"] == named["test_accuracy"]
