"""Fine-tuning, scratch and WRN training: truncation, learning, exact resumption, torchrun."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import (
    CPU,
    GRID_CHOICE,
    TINY_DDPMPP,
    TINY_UNET,
    assert_same_weights,
    digits_subset,
    interrupted_and_resumed,
    killed_when_hanging,
    tiny_checkpoint,
)

from ddae.checkpoints import (
    CheckpointError,
    StateLockedError,
    load_checkpoint,
    partial_state_lock,
    save_checkpoint,
)
from ddae.classifier_training import (
    PARTIAL_STATE,
    ClassifierOptions,
    ClassifierTrainer,
    ClassifierTrainingConfig,
    lr_at_epoch,
)
from ddae.configs import ConfigError
from ddae.datasets.format import ImageDataset
from ddae.diffusion import build_framework
from ddae.finetune import (
    TruncatedClassifier,
    classifier_stage,
    finetune,
    train_from_scratch,
    train_supervised_wrn,
)
from ddae.layer_choice import resolve_layer_t
from ddae.networks import build_network, count_parameters
from ddae.sources import ImageSource

FRAMEWORKS = {
    "ddpm": ({"kind": "ddpm", "timesteps": 1000}, 11, 1000),
    "edm": ({"kind": "edm"}, 4, 18),
}
TINY_WRN = {"arch": "wide_resnet", "depth": 10, "widen_factor": 1}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> dict[str, Path]:
    """Digits at 16 px: the full splits, a 128-image and a 100-image training subset (at batch
    32: 3 full batches and one of 4) and a 100-image test subset."""
    folder = tmp_path_factory.mktemp("digits")
    paths = {name: digits_subset(folder / f"{name}.npz", name) for name in ("train", "test")}
    paths["small"] = digits_subset(folder / "small.npz", count=128)
    paths["uneven"] = digits_subset(folder / "uneven.npz", count=100)
    paths["small_test"] = digits_subset(folder / "small_test.npz", "test", count=100)
    return paths


def hooked_feature(network, framework, x0, layer, t, steps) -> torch.Tensor:
    """What the feature cache sees: a forward hook on the block, mean over (H, W)."""
    sigma = torch.full((x0.shape[0],), framework.sigma_at_timestep(t, steps), dtype=torch.float64)
    seen = {}
    block = network.decoder_blocks()[layer - 1][1]
    handle = block.register_forward_hook(
        lambda module, inputs, output: seen.setdefault("f", output)
    )
    try:
        network(*framework.network_inputs(x0, sigma))
    finally:
        handle.remove()
    return seen["f"].mean(dim=(2, 3))


@pytest.mark.parametrize("framework", ["ddpm", "edm"])
@pytest.mark.parametrize("spec", [TINY_UNET, TINY_DDPMPP], ids=["ddpm_unet", "ddpmpp"])
def test_truncated_features_equal_hooked_activations(spec, framework):
    framework_spec, t, steps = FRAMEWORKS[framework]
    diffusion = build_framework(framework_spec)
    torch.manual_seed(0)
    network = build_network(spec).eval()
    x0 = torch.rand(3, 3, 16, 16) * 2 - 1
    for layer in range(1, len(network.decoder_blocks()) + 1):
        classifier = TruncatedClassifier(network, diffusion, layer, t, steps, 10).eval()
        with torch.no_grad():
            expected = hooked_feature(network, diffusion, x0, layer, t, steps)
            got = classifier.features(x0)
            logits = classifier(x0)
        assert got.shape == expected.shape == (3, classifier.encoder.out_channels)
        assert torch.equal(got, expected), (layer, (got - expected).abs().max())
        assert logits.shape == (3, 10)
        assert classifier.layer_name == network.decoder_blocks()[layer - 1][0]


@pytest.mark.parametrize("spec", [TINY_UNET, TINY_DDPMPP], ids=["ddpm_unet", "ddpmpp"])
def test_truncated_encoders_hold_only_used_blocks(spec):
    network = build_network(spec)
    full = dict(network.named_parameters())
    blocks = [name for name, _ in network.decoder_blocks()]
    previous = 0
    for layer in range(1, len(blocks) + 1):
        encoder = network.truncated(layer)
        names = set(dict(encoder.named_parameters()))
        assert names <= set(full)  # the full network's names, shared parameters
        assert all(encoder.get_parameter(n) is full[n] for n in names)
        assert previous < count_parameters(encoder) < count_parameters(network)
        previous = count_parameters(encoder)
        for later in blocks[layer:]:
            assert not any(n.startswith(later + ".") for n in names), (layer, later)
        for earlier in blocks[:layer]:
            assert any(n.startswith(earlier + ".") for n in names), (layer, earlier)
        assert not any("conv_out" in n or "aux_" in n or "map_augment" in n for n in names)
        # every parameter gets a gradient: DDP needs no find_unused_parameters
        framework = build_framework(FRAMEWORKS["edm"][0])
        classifier = TruncatedClassifier(network, framework, layer, 4, 18, 10)
        classifier(torch.rand(2, 3, 16, 16)).sum().backward()
        unused = [n for n, p in classifier.named_parameters() if p.grad is None]
        assert not unused, unused
        network.zero_grad(set_to_none=True)
    with pytest.raises(ValueError, match="outside"):
        network.truncated(len(blocks) + 1)


def test_lr_schedule_follows_official_warmup_and_cosine():
    """noisy_classifier_WRN.py: manual warm-up + per-epoch CosineAnnealingLR(T_max=epochs)."""
    for warmup in (0, 5):
        config = ClassifierTrainingConfig(epochs=20, lr=0.1, warmup_epochs=warmup)
        parameter = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.SGD([parameter], lr=0.1)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 20)
        for epoch in range(20):
            if epoch + 1 <= warmup:
                optimizer.param_groups[0]["lr"] = 0.1 * (epoch + 1) / warmup
            assert lr_at_epoch(epoch, config) == pytest.approx(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
    scaled = ClassifierTrainingConfig(epochs=1, lr=1e-3, batch_size=512, lr_reference_batch=128)
    assert lr_at_epoch(0, scaled) == pytest.approx(4e-3)  # linear.py: lr × 4 GPUs


def test_finetune_learns_digits(digits, tmp_path):
    checkpoint = tiny_checkpoint(
        tmp_path / "edm.pt", TINY_DDPMPP, {"kind": "edm"}, seed=1, model=True
    )
    config = {"epochs": 3, "batch_size": 64, "lr": 1e-3, "hflip": False, "crop_padding": 1}
    out = tmp_path / "finetune" / "epoch2.json"
    metrics = tmp_path / "metrics.jsonl"
    finetune(
        checkpoint, ImageSource(digits["train"], digits["test"]), 2, 4, 18, config, out, metrics,
        tmp_path / "state", processes=1, device="cpu", progress=False,
    )  # fmt: skip
    result = json.loads(out.read_text())
    print("fine-tuned digits accuracy", result["test_accuracy"])
    assert result["test_accuracy"] > 35.0  # chance is 10 %
    assert result["layer"] == 2 and result["layer_name"] == "dec.8x8_block1"
    assert result["t"] == 4 and result["steps"] == 18
    assert result["sigma"] == pytest.approx(0.0599, abs=1e-4)  # Table 9's EDM t = 4/18
    assert result["created_by"] == "finetune" and result["checkpoint"] == str(checkpoint)
    assert result["config"]["epochs"] == result["epochs"] == 3
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3]
    assert len(metrics.read_text().splitlines()) == 3
    assert not (tmp_path / "state" / PARTIAL_STATE).exists()


def small_trainer(paths, identity="a", seed=0) -> ClassifierTrainer:
    """A truncated tiny UNet (dropout 0.1) on 100 digits: 4 steps an epoch, the last of 4 images;
    its network comes in eval mode, as `load_network` returns a pre-trained one."""
    train, test = ImageDataset.load(paths["uneven"]), ImageDataset.load(paths["small_test"])
    config = ClassifierTrainingConfig(
        epochs=3, batch_size=32, lr=1e-3, warmup_epochs=1, hflip=True, crop_padding=2, seed=seed
    )
    framework = build_framework({"kind": "ddpm", "timesteps": 1000})

    def build():
        network = build_network(TINY_UNET).eval()
        return TruncatedClassifier(network, framework, 2, 11, 1000, 10)

    return ClassifierTrainer(build, train, test, config, CPU, {"id": identity})


def test_interrupted_training_resumes_bitwise_in_train_mode(digits, tmp_path, monkeypatch):
    """Every step of every epoch, the resumed one included, runs with every module of the
    network in train mode (dropout active), though it came in eval mode and each epoch ends with
    an evaluation; so the resumed run ends bitwise where the uninterrupted one does."""
    real_step, steps = ClassifierTrainer.step, []

    def recording_step(self, permutation):
        modules = list(self.network.modules())
        dropout = sum(isinstance(module, torch.nn.Dropout) for module in modules)
        steps.append((self.state.step, dropout, all(module.training for module in modules)))
        real_step(self, permutation)

    monkeypatch.setattr(ClassifierTrainer, "step", recording_step)
    # 4 steps an epoch; interrupted in epoch 2, step 3; last snapshot at step 6 (epoch 2, 2)
    straight, history, resumed, resumed_history, resumed_at = interrupted_and_resumed(
        lambda: small_trainer(digits), tmp_path / "state", monkeypatch, 3, interrupt_at_step=7
    )
    assert resumed_at == (6, 1)
    # straight 0..11, interrupted 0..5, resumed 6..11; dropout in the truncated blocks
    assert [step for step, _, _ in steps] == [*range(12), *range(6), *range(6, 12)]
    assert all(dropout > 0 and training for _, dropout, training in steps)
    assert_same_weights(straight.network, resumed.network)
    assert history == resumed_history
    assert [entry["step"] for entry in history] == [4, 8, 12]

    state = tmp_path / "state"
    other = small_trainer(digits, identity="b")  # another job's partial state is not used
    assert not other.resume(state)


def test_partial_state_of_another_epoch_length_is_ignored(digits, tmp_path, caplog):
    """A partial state whose step counts 3-step epochs (written while the last partial batch was
    dropped: 100 // 32) does not continue a run of 4-step epochs."""
    payload = small_trainer(digits).payload()
    payload.update(epoch=1, epoch_step=0, step=3)
    save_checkpoint(payload, tmp_path / PARTIAL_STATE)
    assert not small_trainer(digits).resume(tmp_path)
    assert "its epochs are not 4 steps long" in caplog.text


KILLABLE_FINETUNE = """
import os, sys, time
from pathlib import Path
import torch
from ddae.classifier_training import ClassifierTrainer
from ddae.finetune import finetune
from ddae.sources import ImageSource
checkpoint, train, test, out, state, hang_at = sys.argv[1:7]
step, run = ClassifierTrainer.step, ClassifierTrainer.run


def step_then_hang(self, permutation):  # the event the test waits for: step N trained
    step(self, permutation)
    if self.state.step == int(hang_at):
        (Path(state) / "hanging").write_text(str(os.getpid()))
        while True:  # killed here, past the last partial state
            time.sleep(60)


def run_keeping_weights(self, options):  # the result JSON holds no weights
    history = run(self, options)
    torch.save(self.network.state_dict(), out + ".weights.pt")
    return history


ClassifierTrainer.step, ClassifierTrainer.run = step_then_hang, run_keeping_weights
config = {"epochs": 2, "batch_size": 32, "lr": 1e-3, "crop_padding": 2}
finetune(checkpoint, ImageSource(train, test), 2, 4, 18, config, out,
         Path(state) / "metrics.jsonl", state, processes=1, device="cpu", progress=False,
         snapshot_every_steps=3)
"""


def test_killed_finetune_resumes_bitwise(digits, tmp_path):
    """A fine-tune (the pre-trained network from load_network, dropout 0.1) killed with SIGKILL
    after step 7 of 8 (epoch 2; last partial state at step 6) and rerun ends with the weights,
    result and metrics of an uninterrupted run, bit for bit; its epoch-2 metrics line, the
    first after the resume, says it follows the restored step 6."""
    checkpoint = tiny_checkpoint(tmp_path / "edm.pt", TINY_DDPMPP, {"kind": "edm"}, seed=1)
    data = [str(digits["uneven"]), str(digits["small_test"])]

    def command(name: str, hang_at: int) -> list[str]:
        out, state = tmp_path / f"{name}.json", tmp_path / name
        return [sys.executable, "-c", KILLABLE_FINETUNE, str(checkpoint), *data, str(out),
                str(state), str(hang_at)]  # fmt: skip

    uninterrupted = subprocess.Popen(command("straight", 0))  # beside the killed one
    try:
        with killed_when_hanging(command("resumed", 7), tmp_path / "resumed" / "hanging"):
            pass
        assert not (tmp_path / "resumed.json").exists()
        assert load_checkpoint(tmp_path / "resumed" / PARTIAL_STATE)["step"] == 6
        subprocess.run(command("resumed", 0), check=True)
    finally:
        assert uninterrupted.wait() == 0

    def without_seconds(entries: list[dict]) -> list[dict]:
        return [{k: v for k, v in entry.items() if k != "seconds"} for entry in entries]

    runs = {}
    for name in ("straight", "resumed"):
        result = json.loads((tmp_path / f"{name}.json").read_text())
        result["history"] = without_seconds(result["history"])
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        metrics = without_seconds([json.loads(line) for line in lines])
        runs[name] = result, metrics, torch.load(tmp_path / f"{name}.json.weights.pt")
    (straight, straight_metrics, straight_weights), (resumed, metrics, weights) = runs.values()
    assert straight_weights.keys() == weights.keys()
    for name, value in straight_weights.items():
        assert torch.equal(weights[name], value), name
    assert resumed == straight
    assert [line.pop("resumed_from", None) for line in metrics] == [None, 6]
    assert metrics == straight_metrics
    assert [line["step"] for line in metrics] == [4, 8]


def test_classifier_epoch_at_the_papers_batch(monkeypatch):
    """50,000 images at a global batch of 512 (CIFAR-10, 4 GPUs × 128, Tables 7–8) are 98 steps
    an epoch, the last one of 336 images: the authors' loader keeps the partial batch."""
    count, classes = 50_000, [str(k) for k in range(10)]
    images = torch.zeros(count, 3, 8, 8, dtype=torch.uint8)
    train = ImageDataset(images, torch.arange(count) % 10, classes)
    test = ImageDataset(images[:10], torch.arange(10), classes)
    config = ClassifierTrainingConfig(epochs=1, batch_size=512)

    def build():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10))

    trainer = ClassifierTrainer(build, train, test, config, CPU, {})
    sizes, train_batch = [], trainer.data.train_batch

    def counted(indices, *args):
        sizes.append(len(indices))
        return train_batch(indices, *args)

    monkeypatch.setattr(trainer.data, "train_batch", counted)
    (record,) = trainer.run(ClassifierOptions(progress=False, eval_every=0))
    assert trainer.steps_per_epoch == 98 and record["step"] == 98
    assert sizes == [512] * 97 + [336]


def test_corrupt_partial_state_names_the_file(digits, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / PARTIAL_STATE).write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match=PARTIAL_STATE):
        small_trainer(digits).resume(state)
    with pytest.raises(CheckpointError, match=PARTIAL_STATE):
        train_supervised_wrn(
            TINY_WRN, ImageSource(digits["small"], digits["test"]), {"epochs": 1, "batch_size": 64},
            tmp_path / "wrn.json", None, state, processes=1, device="cpu", progress=False,
        )  # fmt: skip


def test_second_writer_of_a_partial_state_fails_at_once(digits, tmp_path):
    state = tmp_path / "state"
    # the lock held here stands for the orphan of a killed Snakemake, still training
    locked = pytest.raises(StateLockedError, match=r"pid \d+ on .* still writing")
    with partial_state_lock(state), locked:
        train_supervised_wrn(
            TINY_WRN, ImageSource(digits["small"], digits["test"]), {"epochs": 1, "batch_size": 64},
            tmp_path / "wrn.json", None, state, processes=1, device="cpu", progress=False,
        )  # fmt: skip
    assert not (tmp_path / "wrn.json").exists()


def test_a_finished_job_leaves_no_lock_or_empty_partial_folder(tmp_path):
    """Issue 22 item 9: every finished job left partial/<job>/writer.lock in results/."""
    run = tmp_path / "run"
    with partial_state_lock(run / "partial" / "finetune_epoch4"):
        pass  # the job finished and removed its partial state
    assert not (run / "partial").exists() and run.is_dir()
    with partial_state_lock(run / "partial" / "scratch"):
        (run / "partial" / "scratch" / PARTIAL_STATE).write_bytes(b"state")  # it failed
    assert (run / "partial" / "scratch" / PARTIAL_STATE).exists()  # kept for the next attempt
    with partial_state_lock(run / "partial"):  # pretraining's state folder, beside scratch's
        pass
    assert (run / "partial" / "scratch" / PARTIAL_STATE).exists()
    assert not (run / "partial" / "writer.lock").exists()
    (run / "partial" / "scratch" / PARTIAL_STATE).unlink()
    with partial_state_lock(run / "partial" / "scratch"):  # the next attempt finishes
        pass
    assert not (run / "partial").exists()


def test_wrn_and_scratch_train(digits, tmp_path):
    small = ImageSource(digits["small"], digits["test"])
    config = {"epochs": 1, "batch_size": 64, "optimizer": "sgd", "lr": 0.1, "weight_decay": 5e-4}
    train_supervised_wrn(
        TINY_WRN, small, config, tmp_path / "wrn.json", None,
        tmp_path / "s1", processes=1, device="cpu", progress=False,
    )  # fmt: skip
    wrn = json.loads((tmp_path / "wrn.json").read_text())
    assert wrn["layer"] is None and wrn["t"] is None and wrn["sigma"] is None
    assert wrn["network"]["num_classes"] == 10 and wrn["checkpoint"] is None
    assert wrn["created_by"] == "train_supervised_wrn"
    assert 0 <= wrn["test_accuracy"] <= 100 and wrn["history"][0]["loss"] > 0

    run = {"network": TINY_UNET, "framework": FRAMEWORKS["ddpm"][0]}
    config = {"epochs": 1, "batch_size": 64, "lr": 5e-4, "warmup_epochs": 1}
    train_from_scratch(
        run, small, 3, 11, 1000, config, tmp_path / "scratch.json",
        None, tmp_path / "s2", processes=1, device="cpu", progress=False,
    )  # fmt: skip
    scratch = json.loads((tmp_path / "scratch.json").read_text())
    assert scratch["layer_name"] == "unet.up_blocks.1.resnets.0"
    assert scratch["checkpoint"] is None and scratch["run"]["network"]["arch"] == "ddpm_unet"
    with pytest.raises(ConfigError, match="training"):
        train_from_scratch(
            {**run, "training": {}}, small, 3, 11, 1000, config,
            tmp_path / "x.json", None, tmp_path / "s3", processes=1, device="cpu",
        )  # fmt: skip
    with pytest.raises(ConfigError, match="unknown key 'learning_rate'"):
        train_supervised_wrn(
            TINY_WRN, small, {"epochs": 1, "learning_rate": 1.0},
            tmp_path / "x.json", None, tmp_path / "s3", processes=1, device="cpu",
        )  # fmt: skip


def test_layer_t_comes_from_the_grid_or_the_config(tmp_path):
    grid = tmp_path / "epoch2.json"
    grid.write_text(json.dumps(GRID_CHOICE | {"layer": 6, "layer_name": "x", "t": 4, "steps": 18}))
    assert resolve_layer_t([str(grid)], None, None) == (6, 4, 18)
    assert resolve_layer_t([str(grid)], None, 18) == (6, 4, 18)
    with pytest.raises(ConfigError, match="steps=18, config says 1000"):
        resolve_layer_t([str(grid)], None, 1000)
    assert resolve_layer_t([], {"layer": 7, "t": 11}, 1000) == (7, 11, 1000)
    with pytest.raises(ConfigError, match="layer_t"):
        resolve_layer_t([], None, 1000)


def test_classifier_stage_takes_layer_t_checkpoint_and_source_from_the_rule_inputs(
    digits, tmp_path
):
    checkpoint = tiny_checkpoint(tmp_path / "edm.pt", TINY_DDPMPP, {"kind": "edm"}, seed=1)
    grid = tmp_path / "grid.json"
    grid.write_text(json.dumps(GRID_CHOICE | {"layer": 2, "layer_name": "x", "t": 4, "steps": 18}))
    inputs = {"checkpoint": checkpoint, "train": digits["small"], "test": digits["test"]}
    config = {"epochs": 1, "batch_size": 64, "hflip": False}
    out = tmp_path / "finetune.json"
    stage = {"metrics_path": None, "state_dir": tmp_path / "s", "gpus": 0}
    classifier_stage(
        {"kind": "pretrained"}, inputs | {"choice": [str(grid)]}, None, 18, config, out, **stage
    )
    result = json.loads(out.read_text())
    assert (result["layer"], result["t"], result["steps"]) == (2, 4, 18)
    assert result["created_by"] == "finetune" and result["checkpoint"] == str(checkpoint)
    assert (result["train"], result["test"]) == (str(digits["small"]), str(digits["test"]))
    with pytest.raises(ConfigError, match="steps=18, config says 1000"):
        classifier_stage({"kind": "pretrained"}, inputs | {"choice": [str(grid)]}, None, 1000,
                         config, out, **stage)  # fmt: skip
    classifier_stage(
        {"kind": "pretrained"}, inputs | {"choice": []}, {"layer": 1, "t": 3}, 18, config, out,
        **stage,
    )  # fmt: skip
    assert json.loads(out.read_text())["layer"] == 1
    with pytest.raises(ConfigError, match=r"model.kind: unknown 'mlp'"):
        classifier_stage({"kind": "mlp"}, inputs, None, None, config, out, **stage)


@pytest.mark.slow
def test_launcher_runs_a_two_process_finetune(digits, tmp_path):
    """torchrun with 2 gloo workers × 32 images follows one process × 64 images."""
    network = {**TINY_DDPMPP, "dropout": 0.0}
    checkpoint = tiny_checkpoint(tmp_path / "edm.pt", network, {"kind": "edm"}, seed=1, model=True)
    config = {"epochs": 1, "batch_size": 64, "lr": 1e-4, "hflip": False}
    results = []
    for processes in (1, 2):  # 100 images: 64 + 36, as 2 workers × (32 + 18)
        out = tmp_path / f"{processes}.json"
        finetune(
            checkpoint, ImageSource(digits["uneven"], digits["test"]), 2, 4, 18, config, out, None,
            tmp_path / f"state{processes}", processes=processes, device="cpu", progress=False,
        )  # fmt: skip
        results.append(json.loads(out.read_text()))
    one, two = results
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["history"][0]["step"] == two["history"][0]["step"] == 2
    assert two["history"][0]["loss"] == pytest.approx(one["history"][0]["loss"], rel=1e-3)
    assert abs(two["test_accuracy"] - one["test_accuracy"]) <= 1.0
