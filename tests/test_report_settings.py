"""Tables 6-8 show the value a job effectively uses where config.yaml leaves a setting out: the
config class's default, what the code always does, or for DiT the latent cache's augmentation."""

from __future__ import annotations

from ddae.report.settings import settings_table


def rows(frame, label):
    part = frame[frame["model"] == label]
    return {row.quantity: (row.measured, row.matches) for row in part.itertuples()}


def test_paper_defaults_are_shown_as_the_effective_values():
    columns = [
        {
            "label": "cifar10_ddpm",
            "config": {"epochs": 10, "lr": 1e-3, "batch_size": 512},
            "paper": "cifar10_ddpm",
        },
        {
            "label": "cifar10_dit",
            "config": {"epochs": 30, "lr": 1e-3, "batch_size": 512, "hflip": False},
            "paper": "cifar10_dit",
            "augmentation": {"crop_padding": 2},
        },
    ]
    frame = settings_table("table6", columns)
    assert "not set" not in set(frame["measured"].astype(str))
    ddpm = rows(frame, "cifar10_ddpm")
    assert ddpm["optimizer [solver, code default]"] == ("adam", True)
    assert ddpm["learning rate schedule [fixed in the code]"] == ("cosine decay", True)
    assert ddpm["RandomHorizontalFlip [hflip, code default]"] == (True, True)
    assert ddpm["RandomCrop padding [crop_padding, code default]"] == (4, True)
    dit = rows(frame, "cifar10_dit")  # flip and crop come from the latents, not the probe
    assert dit["RandomHorizontalFlip [latents.hflip, code default]"] == (True, True)
    assert dit["RandomCrop padding [latents.crop_padding]"] == (2, False)


def test_table6_names_the_lbfgs_probe_and_the_settings_it_does_not_use():
    """LinearProbeConfig.solver "lbfgs" (not in the paper): Table 6 shows it against the paper's
    Adam, and neither a learning rate nor a schedule (L-BFGS has none)."""
    config = {"epochs": 3, "solver": "lbfgs", "batch_size": 128, "lr": 3e-2}
    columns = [{"label": "digits_ddpmpp_edm", "config": config, "paper": "cifar10_edm"}]
    edm = rows(settings_table("table6", columns), "digits_ddpmpp_edm")
    assert edm["optimizer [solver]"] == ("lbfgs", False)
    assert edm["base learning rate [solver lbfgs]"] == ("none (L-BFGS line search)", False)
    assert edm["learning rate schedule [solver lbfgs]"] == ("none (L-BFGS)", False)
    assert "lr" not in edm and "solver" not in edm  # each shown once, in its paper row


def test_classifier_tables_use_the_training_config_defaults():
    columns = [{"label": "cifar10_edm", "config": {"epochs": 50}, "paper": "cifar10_edm"}]
    edm = rows(settings_table("table7", columns), "cifar10_edm")
    assert edm["optimizer [optimizer, code default]"] == ("adam", True)
    assert edm["learning rate schedule [fixed in the code]"] == ("cosine decay", True)
    assert edm["batch size (global) [batch_size, code default]"] == (512, True)
    wrn = [
        {"label": "WRN", "config": {"epochs": 200, "optimizer": "sgd", "lr": 0.1}, "paper": "wrn"}
    ]
    frame = settings_table("table8", wrn)
    assert rows(frame, "WRN")["warmup epochs [warmup_epochs, code default]"] == (0, False)
