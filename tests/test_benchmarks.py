"""The side-by-side benchmark's parts that need neither a GPU nor the authors' code."""

import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def side_by_side():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pretrain_side_by_side

        yield pretrain_side_by_side
    finally:
        sys.path.remove(str(BENCHMARKS))


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
