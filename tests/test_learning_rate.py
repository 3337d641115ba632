"""The one learning-rate convention (ddae.learning_rate) and its use in every stage."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import TINY_UNET

from ddae import classifier_training, learning_rate, training
from ddae.configs import ConfigError, from_mapping
from ddae.learning_rate import lr_at_epoch, peak_lr
from ddae.settings.noisy_heads import NoisyHeadConfig
from ddae.settings.probes import LinearProbeConfig, ProbeConfig


def test_peak_lr_scales_linearly_from_the_reference_batch():
    assert peak_lr(1e-3, 512, 128) == 4e-3  # Table 6: 1e-3 per 128 images, 4 GPUs
    assert peak_lr(8e-5, 64, 8) == pytest.approx(6.4e-4)  # Table 7 DiT: 8 per GPU x 8 GPUs
    assert peak_lr(0.1, 512, 0) == 0.1  # noisy_classifier_WRN.py does not scale
    with pytest.raises(ValueError, match="lr_reference_batch"):
        peak_lr(1e-3, 512, -1)


def test_constant_schedule_is_ddae_train_py_bit_for_bit():
    lr, warm = 4e-4, 13  # DDAE config/DDPM_ddpm.yaml on 4 GPUs
    for ep in range(40):  # train.py: g['lr'] = lr * min((ep + 1.0) / opt.warm_epoch, 1.0)
        assert lr_at_epoch(ep, lr, 2000, warm, "constant") == lr * min((ep + 1.0) / warm, 1.0)
    assert lr_at_epoch(5, lr, 2000, 0, "constant") == lr


def test_cosine_schedule_follows_the_official_warm_up_and_scheduler():
    """noisy_classifier_WRN.py: lr·(e+1)/W in warm-up epochs, CosineAnnealingLR stepped per
    epoch; linear.py: the same without warm-up."""
    for epochs, warm, peak in [(200, 5, 0.1), (15, 0, 4e-3), (7, 3, 2e-3)]:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=peak)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
        for e in range(epochs):
            if e + 1 <= warm:
                for group in optimizer.param_groups:
                    group["lr"] = peak * (e + 1.0) / warm
                assert lr_at_epoch(e, peak, epochs, warm, "cosine") == peak * (e + 1.0) / warm
            ours = lr_at_epoch(e, peak, epochs, warm, "cosine")
            assert math.isclose(ours, optimizer.param_groups[0]["lr"], rel_tol=1e-9, abs_tol=1e-15)
            optimizer.step()  # no gradient: changes nothing, keeps the scheduler's order
            scheduler.step()
    with pytest.raises(ValueError, match="schedule"):
        lr_at_epoch(0, 1e-3, 10, 0, "linear")  # type: ignore[arg-type]


def test_every_stage_states_lr_at_a_reference_batch():
    """The same two keys in pre-training, probes, classifiers and the noisy head."""
    pre = from_mapping(
        training.TrainingConfig,
        {"lr": 1e-4, "lr_reference_batch": 128, "batch_size": 512, "warmup_epochs": 13},
    )
    assert training.lr_at_epoch(12, pre) == 4e-4
    probe = ProbeConfig(epochs=10, lr=1e-3, lr_reference_batch=128, batch_size=512)
    assert probe.lr_at_epoch(0) == 4e-3
    assert ProbeConfig(epochs=10, lr=1e-3, lr_reference_batch=0).lr_at_epoch(0) == 1e-3
    assert LinearProbeConfig(epochs=3, lr=3e-2, batch_size=128).lr_at_epoch(0) == 3e-2
    clf = classifier_training.ClassifierTrainingConfig(epochs=2, lr=5e-4, lr_reference_batch=128)
    assert classifier_training.lr_at_epoch(0, clf) == 2e-3
    head = NoisyHeadConfig(epochs=10).training_config()  # Table 6 protocol: 1e-3 x 4 GPUs
    assert classifier_training.lr_at_epoch(0, head) == 4e-3
    assert learning_rate.peak_lr(head.lr, head.batch_size, head.lr_reference_batch) == 4e-3
    with pytest.raises(ConfigError, match="base_lr"):
        from_mapping(ProbeConfig, {"base_lr": 1e-3})  # the old key is gone


def test_a_run_is_the_same_whichever_way_its_lr_is_stated():
    """normalize_run stores the effective lr: checkpoints written with lr 4e-4 (before the
    key existed) continue under lr 1e-4 at lr_reference_batch 128 with batch 512."""
    run = {"network": TINY_UNET, "framework": {"kind": "ddpm", "timesteps": 100}}
    plain = training.normalize_run({**run, "training": {"lr": 4e-4, "batch_size": 512}})
    stated = training.normalize_run(
        {**run, "training": {"lr": 1e-4, "lr_reference_batch": 128, "batch_size": 512}}
    )
    assert stated == plain and "lr_reference_batch" not in plain["training"]
    assert plain["training"]["lr"] == 4e-4
