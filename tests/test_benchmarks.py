"""The side-by-side benchmark's parts that need neither a GPU nor the authors' code."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_script(name: str):
    """Import benchmarks/<name>.py (scripts, not a package) with benchmarks/ on the path."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def side_by_side():
    yield from benchmark_script("pretrain_side_by_side")


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H200", 989.4),
        ("NVIDIA H100 80GB HBM3", 989.4),
        ("NVIDIA H100 PCIe", 756.5),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA GeForce GTX 1080", None),
    ],
)
def test_peak_table_by_device_name(side_by_side, name, peak):
    assert side_by_side.peak_tflops(name) == peak


def test_mfu_is_achieved_over_peak_and_absent_without_peak(side_by_side):
    # 1e12 FLOPs per step at 98.94 steps/s is 98.94 TFLOP/s, 10 % of 989.4
    assert side_by_side.mfu(1e12, 98.94, 989.4) == pytest.approx(0.1)
    assert side_by_side.mfu(1e12, 98.94, None) is None


def test_flops_of_one_step_count_forward_and_backward(side_by_side):
    layer = nn.Linear(8, 4, bias=False)
    x = torch.randn(3, 8)

    def step():
        layer(x).sum().backward()

    # forward 2·3·8·4 = 192; backward: weight gradient only (x needs none), another 192
    assert side_by_side.count_step_flops(step) == 384


def test_a_path_that_is_not_a_checkout_is_refused_by_name(side_by_side, tmp_path, capsys):
    with pytest.raises(side_by_side.CheckoutError, match="not a directory"):
        side_by_side.check_checkout(tmp_path / "nope", ("model/DDPM.py",), "FutureXiang/ddae")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "DDPM.py").write_text("")
    with pytest.raises(side_by_side.CheckoutError, match=r"model/EDM.py.*missing"):
        side_by_side.check_checkout(tmp_path, side_by_side.DDAE_FILES, "FutureXiang/ddae")
    with pytest.raises(SystemExit):
        side_by_side.parse_args(["--ddae-repo", str(tmp_path)])
    assert "not a checkout of FutureXiang/ddae" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        side_by_side.parse_args(["--ddae-repo", str(tmp_path / "nope"), "--steps", "0"])
    assert "not a directory" in capsys.readouterr().err


def test_their_unet_arguments_follow_our_networks(side_by_side):
    config = yaml.safe_load((BENCHMARKS.parent / "config.yaml").read_text())
    run = config["pretraining"]
    kind, net, diffusion = side_by_side.ddae_arguments(run["cifar10_ddpm"])
    assert kind == "DDPM" and diffusion == {"n_T": 1000, "betas": [1e-4, 0.02]}
    assert net["is_attn"] == [False, True, False, False] and net["n_channels"] == 128
    assert net["use_res_for_updown"] is False and "augment_dim" not in net
    kind, net, diffusion = side_by_side.ddae_arguments(run["tiny_imagenet_edm"])
    assert kind == "EDM" and diffusion["augment_prob"] == 0.12
    assert net["image_shape"] == [3, 64, 64] and net["is_attn"] == [False, False, True, False]
    assert net["use_res_for_updown"] is True and net["augment_dim"] == 9 and net["n_blocks"] == 4


# --- benchmarks/paper_cost.py: the work model of the whole-paper cost table ---------------------

REPO = BENCHMARKS.parent
PAPER = yaml.safe_load((REPO / "config.yaml").read_text())


@pytest.fixture(scope="module")
def paper_cost():
    yield from benchmark_script("paper_cost")


def test_dry_run_listing_is_parsed_into_jobs_with_wildcards(paper_cost):
    text = """
[Mon Nov 30 10:08:32 2026]
rule pretrain:
    input: resources/data/cifar10/train.npz
    wildcards: dataset=cifar10, run=cifar10_ddpm_t64, epoch=1
    resources: tmpdir=/tmp, gpu=0
[Mon Nov 30 10:08:32 2026]
localrule table5:
    output: results/table5.csv, results/table5.md
[Mon Nov 30 10:08:32 2026]
rule probe_timestep:
    wildcards: dataset=cifar10, run=cifar10_edm, epoch=2000, t=4
"""
    assert paper_cost.parse_dry_run(text) == [
        paper_cost.Job("pretrain", {"dataset": "cifar10", "run": "cifar10_ddpm_t64", "epoch": "1"}),
        paper_cost.Job("table5", {}),
        paper_cost.Job(
            "probe_timestep",
            {"dataset": "cifar10", "run": "cifar10_edm", "epoch": "2000", "t": "4"},
        ),
    ]


def test_a_pretrain_job_starts_at_the_previous_listed_epoch_or_segment_end(paper_cost):
    run = {"epochs": [100, 200], "segment_epochs": 40}  # chain 40, 80, 100, 140, 180, 200
    starts = {epoch: paper_cost.chain_start(run, epoch) for epoch in (40, 80, 100, 140, 180, 200)}
    assert starts == {40: 0, 80: 40, 100: 80, 140: 100, 180: 140, 200: 180}
    assert paper_cost.chain_start({"epochs": [150, 250]}, 250) == 150


def test_paper_jobs_get_the_images_of_their_stage(paper_cost, tmp_path):
    """Work at config.yaml scale, by hand from the paper's settings (no dataset prepared in
    tmp_path: Sec. 4 sizes, CIFAR-10 50,000 / 10,000, Tiny-ImageNet 100,000 / 10,000)."""
    work = paper_cost.Workload(PAPER, tmp_path)

    def of(rule, **wildcards):
        return [(w.network, w.mode, w.images) for w in work.of(paper_cost.Job(rule, wildcards))]

    # Figure 4's T = 512 run: 150 → 250 epochs of 50,000 images, on the shared UNet's rate
    assert of("pretrain", run="cifar10_ddpm_t512", epoch="250") == [
        ("cifar10_ddpm", "train", 100 * 50_000)
    ]
    # EDM Heun 18 levels: 35 evaluations per sample; DDIM 100 of T = 256: 128 levels
    assert of("sample_fid", run="cifar10_edm", epoch="2000")[0][2] == 50_000 * 35
    assert of("sample_fid", run="cifar10_ddpm_t256", epoch="2000")[0][2] == 50_000 * 128
    inception = of("sample_fid", run="cifar10_ddpm_t256", epoch="2000")[1]
    assert inception == ("inception", "forward", 50_000)
    # one grid t: 10 views of the training set + the test set, every layer (a full pass)
    views = PAPER["pretraining"]["tiny_imagenet_edm"]["evaluation"]["features"]["views"]
    assert of("probe_timestep", run="tiny_imagenet_edm", epoch="2000", t="3") == [
        ("tiny_imagenet_edm", "forward", views * 100_000 + 10_000)
    ]
    assert of("supervised_wrn", dataset="cifar10") == [
        ("supervised.cifar10", "train", 200 * 50_000)
    ]
    assert of("table3") == [] and of("grid_search", run="cifar10_edm", epoch="2000") == []
    with pytest.raises(KeyError, match="no work model"):
        of("a_new_rule")


def test_gpu_hours_are_images_over_the_measured_rate(paper_cost, tmp_path):
    work = paper_cost.Workload(PAPER, tmp_path)
    jobs = [
        paper_cost.Job("pretrain", {"run": "cifar10_ddpm_t512", "epoch": "150"}),
        paper_cost.Job("sample_fid", {"run": "cifar10_edm", "epoch": "2000"}),
        paper_cost.Job("table2", {}),
    ]
    rates = {"cifar10_ddpm": {"train": 2500.0}, "cifar10_edm": {"forward": 5000.0}}
    table = paper_cost.cost_table(jobs, work, rates)
    assert table["pretrain"]["gpu_hours"] == pytest.approx(150 * 50_000 / 2500 / 3600)
    assert table["sample_fid"]["gpu_hours"] == pytest.approx(50_000 * 35 / 5000 / 3600)
    assert table["sample_fid"]["missing"] == 1  # Inception's rate was not given
    assert "table2" not in table


def test_every_rule_of_the_paper_dag_has_a_work_model(paper_cost, tmp_path):
    """The real dry run of config.yaml (Snakemake's own job list): every job is either known to
    need no GPU or gets its work; the counts are the paper-shape test's."""
    jobs = paper_cost.dry_run_jobs(REPO)
    work = paper_cost.Workload(PAPER, tmp_path)
    counted = paper_cost.cost_table(jobs, work, {})
    assert counted["probe_timestep"]["jobs"] + counted["probe_timestep (DiT)"]["jobs"] == 263
    assert counted["sample_fid"]["jobs"] == 40 and counted["pretrain"]["jobs"] == 56
    assert counted["finetune (DiT)"]["jobs"] == 2


def test_measure_times_every_network_of_a_config(paper_cost):
    """`measure` on the smoke config's tiny networks, CPU: every network of the DAG (each
    distinct pretraining network, the WideResNets, Inception, the VAE) gets positive rates."""
    smoke = yaml.safe_load((REPO / "tests" / "smoke" / "config.yaml").read_text())
    rates = dict(paper_cost.measure(smoke, "cpu", quick=True, forward_batch=1, repeats=1))
    expected = {subject.key for subject in paper_cost.subjects(smoke)} | {"inception", "vae"}
    assert set(rates) == expected and "supervised.digits" in rates
    assert all("error" not in entry and entry["forward"] > 0 for entry in rates.values())
    trained = [entry for key, entry in rates.items() if key not in ("inception", "vae")]
    assert all(entry["train"] > 0 for entry in trained)


@pytest.fixture
def compare_runs():
    yield from benchmark_script("compare_runs")


def test_compare_runs_finds_a_changed_number_and_skips_timings(tmp_path, compare_runs):
    """benchmarks/compare_runs.py, the before/after check of a restructuring (issue 21)."""
    for side, accuracy, seconds in (("before", 42.5, 1.0), ("after", 42.5, 9.0)):
        run = tmp_path / side / "digits/run/linear"
        run.mkdir(parents=True)
        record = {"test_accuracy": accuracy, "wall_seconds": seconds, "history": [{"loss": 1}]}
        (run / "epoch2.json").write_text(json.dumps(record))
        (tmp_path / side / "digits/run/grid.csv").write_text("layer,t\n1,2\n")
    assert compare_runs.compare(tmp_path / "before", tmp_path / "after") == []
    (tmp_path / "after/digits/run/grid.csv").write_text("layer,t\n1,3\n")
    (tmp_path / "after/digits/run/extra.json").write_text("{}")
    assert compare_runs.compare(tmp_path / "before", tmp_path / "after") == [
        "digits/run/extra.json: only in after",
        "digits/run/grid.csv: [0].t: '2' -> '3'",
    ]
