"""Training: learning, exact resumption, kill -9 recovery, DDP equivalence, clear failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import CPU, TINY_DDPMPP, TINY_UNET, digits_subset, killed_when_hanging
from torch.utils.data import DataLoader, DistributedSampler

import ddae.training as training
from ddae.batching import EpochBatches, epoch_permutation
from ddae.checkpoints import (
    CheckpointError,
    StateLockedError,
    load_checkpoint,
    load_network,
    save_checkpoint,
)
from ddae.datasets.digits import load_digits
from ddae.datasets.format import ImageDataset
from ddae.diffusion import EDM
from ddae.distributed import World
from ddae.launch import PretrainingJob, run_pretraining
from ddae.result_writers import drop_metrics_after
from ddae.settings.pretraining import TrainingConfig, normalize_run
from ddae.training import PARTIAL_STATE, Trainer, TrainOptions, ema_decay_at, update_ema
from ddae.training_metrics import TrainingError
from ddae.training_resume import train_to_epoch

DDPM_RUN = {
    "network": TINY_UNET,
    "framework": {"kind": "ddpm", "timesteps": 100},
    "training": {"batch_size": 16, "lr": 1e-3, "warmup_epochs": 2, "ema_decay": 0.9},
}
EDM_RUN = {
    "network": TINY_DDPMPP,
    "framework": {"kind": "edm"},
    "training": {
        "batch_size": 16,
        "lr": 1e-3,
        "ema_decay": 0.9,
        "ema_rampup_ratio": 0.05,
        "augment_p": 0.5,
        "hflip": False,
    },
}


@pytest.fixture(scope="module")
def digits16(tmp_path_factory) -> Path:
    """64 training digits at 16×16 (4 steps per epoch at batch 16)."""
    return digits_subset(tmp_path_factory.mktemp("data") / "train.npz", count=64)


def sampler_batches(order: torch.Tensor, batch_size: int, world: int, rank: int) -> list:
    """What the authors' DataLoaderDDP (utils.py: DistributedSampler, DataLoader at the per-GPU
    batch, no drop_last) hands ``rank`` in an epoch whose shuffled order is ``order``."""
    sampler = DistributedSampler(order, num_replicas=world, rank=rank, shuffle=False)
    return list(DataLoader(order, batch_size=batch_size // world, sampler=sampler))


@pytest.mark.parametrize(
    "items, batch, world",
    [(50_000, 512, 4), (1437, 64, 4), (1437, 64, 1), (10, 8, 4)],
    ids=["cifar10-4x128", "padded", "one-process", "tiny"],
)
def test_epoch_batches_are_the_authors_loader_batches(items, batch, world):
    """Every step, every rank: the very items its DistributedSampler's loader deals it (the
    padded cases repeat the order's first items, as the sampler does)."""
    order = epoch_permutation(items, 0, 3)
    batches = EpochBatches(items, batch, world)
    theirs = [sampler_batches(order, batch, world, rank) for rank in range(world)]
    assert batches.steps == len(theirs[0])
    for step in range(batches.steps):
        global_batch = batches.items(order, step)
        assert len(global_batch) == batches.size(step) == world * batches.rank_size(step)
        for rank in range(world):
            assert torch.equal(global_batch[batches.mine(rank)], theirs[rank][step]), (step, rank)
    if items == 50_000:  # CIFAR-10 at 4 GPUs × 128: 97 full steps and 4 × 84
        assert (batches.steps, batches.rank_size(96), batches.rank_size(97)) == (98, 128, 84)


def test_pretraining_epoch_at_the_papers_batch(monkeypatch):
    """CIFAR-10's 50,000 images at 4 GPUs × 128 are 98 steps, the last 4 × 84, and each rank
    trains on its DistributedSampler share: the items read back from the drawn batches (each
    image holds its index in two pixels) are those the authors' loader deals that rank."""
    count = 50_000
    index = torch.arange(count)
    images = torch.zeros(count, 3, 16, 16, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 1, 0, 0] = index % 256, index // 256
    dataset = ImageDataset(images, torch.zeros(count, dtype=torch.int64), ["digit"])
    run = {**DDPM_RUN, "training": {**DDPM_RUN["training"], "batch_size": 512, "hflip": False}}
    assert Trainer(run, dataset, CPU).steps_per_epoch == 98
    # four ranks' trainers in one process: construction's collectives are identities here
    monkeypatch.setattr(training, "broadcast_object", lambda world, value: value)
    monkeypatch.setattr(Trainer, "_wrap", lambda self, network: network)
    order = epoch_permutation(count, 0, 0)
    for rank in range(4):
        trainer = Trainer(run, dataset, World(rank, 4, torch.device("cpu")))
        assert trainer.steps_per_epoch == 98
        theirs = sampler_batches(order, 512, 4, rank)
        for step in (0, 97):
            trainer.state.epoch_step = step
            x0, sigma, noise, _ = trainer._draw_batch(order)
            pixels = ((x0[:, :2, 0, 0] + 1) * 127.5).round().long()
            assert torch.equal(pixels[:, 0] + 256 * pixels[:, 1], theirs[step]), (rank, step)
            assert len(x0) == len(sigma) == len(noise) == (128 if step == 0 else 84)


def test_pretraining_network_is_in_train_mode_every_step(digits16):
    """Dropout is active from the first step, even if the network was left in eval mode."""
    trainer = Trainer(DDPM_RUN, ImageDataset.load(digits16), CPU)
    modes = []
    for module in trainer.state.network.modules():
        if isinstance(module, torch.nn.Dropout):
            module.register_forward_pre_hook(lambda module, inputs: modes.append(module.training))
    trainer.state.network.eval()
    trainer.run_to(2, quiet())
    assert len(modes) > 8 and all(modes)


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def quiet(**kwargs) -> TrainOptions:
    return TrainOptions(progress=False, device="cpu", **kwargs)


@pytest.mark.parametrize("run", [DDPM_RUN, EDM_RUN], ids=["ddpm", "edm"])
def test_tiny_network_overfits_one_batch(run):
    """A fixed (σ, noise) evaluation loss on a single 16-image batch falls by more than half."""
    torch.manual_seed(0)
    images = load_digits(resolution=16)["train"]
    batch = ImageDataset(images.images[:16], images.labels[:16], images.classes)
    run = {**run, "training": {**run["training"], "augment_p": 0.0, "warmup_epochs": 0}}
    trainer = Trainer(run, batch, CPU)
    generator = torch.Generator().manual_seed(123)
    x0 = batch.images.float() / 127.5 - 1
    sigma = trainer.framework.sample_training_sigma(16, generator)
    noise = torch.randn(x0.shape, generator=generator)
    network = trainer.state.network

    def evaluation_loss() -> float:
        network.eval()
        with torch.no_grad():
            loss = trainer.framework.training_loss(network, x0, sigma, noise).mean().item()
        network.train()
        return loss

    before = evaluation_loss()
    permutation = torch.arange(16)
    for _ in range(60):
        trainer.step(permutation)
        trainer.state.epoch_step = 0
    after = evaluation_loss()
    print(f"overfit {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("run", [DDPM_RUN, EDM_RUN], ids=["ddpm", "edm"])
def test_resume_is_bitwise_exact(run, digits16, tmp_path):
    train_to_epoch(run, digits16, tmp_path / "straight.pt", 2, options=quiet())
    train_to_epoch(run, digits16, tmp_path / "epoch1.pt", 1, options=quiet())
    train_to_epoch(
        run, digits16, tmp_path / "resumed.pt", 2, start=tmp_path / "epoch1.pt", options=quiet()
    )
    straight, resumed = (
        load_checkpoint(tmp_path / "straight.pt"),
        load_checkpoint(tmp_path / "resumed.pt"),
    )
    assert straight["step"] == resumed["step"] == 8
    assert_same_weights(straight["ema"], resumed["ema"])
    assert_same_weights(straight["model"], resumed["model"])
    # and training moved the weights between epoch 1 and epoch 2
    first = load_checkpoint(tmp_path / "epoch1.pt")
    assert any(not torch.equal(first["ema"][k], v) for k, v in straight["ema"].items())


def test_checkpoint_rebuilds_its_network(digits16, tmp_path):
    train_to_epoch(EDM_RUN, digits16, tmp_path / "e1.pt", 1, options=quiet())
    network, framework, run = load_network(tmp_path / "e1.pt")
    assert isinstance(framework, EDM)
    assert run == normalize_run(EDM_RUN)
    assert_same_weights(network.state_dict(), load_checkpoint(tmp_path / "e1.pt")["ema"])


KILLABLE = """
import json, os, sys, time
from pathlib import Path
import ddae.training as training
import ddae.training_resume as training_resume
run, data, out, state, hang_at = sys.argv[1:6]
append = training.Trainer._append_metrics


def append_then_hang(self, path, record):  # the event the test waits for: step N logged
    append(self, path, record)
    if record["step"] == int(hang_at):
        (Path(state) / "hanging").write_text(str(os.getpid()))
        while True:  # an orphan that keeps its lock until SIGKILL
            time.sleep(60)


training.Trainer._append_metrics = append_then_hang
training_resume.train_to_epoch(json.loads(run), data, out, 6, options=training.TrainOptions(
    state_dir=Path(state), snapshot_every_steps=3, progress=False, device="cpu",
    metrics_path=Path(state) / "metrics.jsonl", log_every_steps=1))
"""


def test_killed_training_continues_from_partial_state(digits16, tmp_path):
    state = tmp_path / "state"
    train_to_epoch(DDPM_RUN, digits16, tmp_path / "reference.pt", 6, options=quiet())
    args = [json.dumps(DDPM_RUN), str(digits16), str(tmp_path / "out.pt"), str(state)]
    # the trainer stops (alive) right after logging step 5, past its snapshot at step 3
    command = [sys.executable, "-c", KILLABLE, *args, "5"]
    with killed_when_hanging(command, state / "hanging") as orphan:
        # a second writer of the same partial state (a rerun beside the orphan) fails at once
        rerun = quiet(state_dir=state, metrics_path=state / "metrics.jsonl")
        with pytest.raises(StateLockedError, match=rf"pid {orphan.pid} .*still writing"):
            train_to_epoch(DDPM_RUN, digits16, tmp_path / "out.pt", 6, options=rerun)
    assert not (tmp_path / "out.pt").exists()
    assert load_checkpoint(state / PARTIAL_STATE)["step"] == 3
    logged = (state / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in logged] == [1, 2, 3, 4, 5]

    subprocess.run([sys.executable, "-c", KILLABLE, *args, "0"], check=True)
    lines = [json.loads(line) for line in (state / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 25))  # each step once, 4-5 redone
    # the first line after the resume says it follows step 3, restored; no other line does
    assert [line.get("resumed_from") for line in lines] == [None] * 3 + [3] + [None] * 20
    assert not (state / PARTIAL_STATE).exists()  # cleaned up once the checkpoint is written
    assert_same_weights(
        load_checkpoint(tmp_path / "reference.pt")["ema"],
        load_checkpoint(tmp_path / "out.pt")["ema"],
    )


def test_time_snapshot_whatever_the_metrics_window(digits16, tmp_path):
    """A one-epoch job whose metrics window spans the epoch still saves partial state."""
    trainer = Trainer(DDPM_RUN, ImageDataset.load(digits16), CPU)
    options = quiet(state_dir=tmp_path, snapshot_every_seconds=0.0, log_every_steps=1000)
    trainer.run_to(1, options)
    assert load_checkpoint(tmp_path / PARTIAL_STATE)["step"] == 3  # the last step before the end


def test_metrics_past_the_resumed_step_are_dropped(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 4)) + '{"ste')
    drop_metrics_after(metrics, 2)
    assert metrics.read_text() == '{"step": 1}\n{"step": 2}\n'


def test_partial_state_of_another_config_is_ignored(digits16, tmp_path, caplog):
    state = tmp_path / "state"
    options = quiet(state_dir=state, snapshot_every_steps=2)
    other = {**DDPM_RUN, "training": {**DDPM_RUN["training"], "lr": 5e-4}}
    trainer = Trainer(other, ImageDataset.load(digits16), CPU)
    trainer.step(torch.arange(64))
    trainer.save(state / PARTIAL_STATE)
    train_to_epoch(DDPM_RUN, digits16, tmp_path / "fresh.pt", 1, options=options)
    train_to_epoch(DDPM_RUN, digits16, tmp_path / "reference.pt", 1, options=quiet())
    assert "run config changed" in caplog.text
    assert_same_weights(
        load_checkpoint(tmp_path / "fresh.pt")["ema"],
        load_checkpoint(tmp_path / "reference.pt")["ema"],
    )


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoints_are_reported_not_replaced(digits16, tmp_path, damage):
    train_to_epoch(DDPM_RUN, digits16, tmp_path / "e1.pt", 1, options=quiet())
    start = tmp_path / "e1.pt"
    data = start.read_bytes()
    start.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(start)):
        train_to_epoch(DDPM_RUN, digits16, tmp_path / "e2.pt", 2, start=start, options=quiet())
    assert not (tmp_path / "e2.pt").exists()

    state = tmp_path / "state"
    state.mkdir()
    (state / PARTIAL_STATE).write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=PARTIAL_STATE):
        train_to_epoch(DDPM_RUN, digits16, tmp_path / "e1b.pt", 1, options=quiet(state_dir=state))


def test_checkpoint_of_another_epoch_length_is_refused(digits16, tmp_path, caplog):
    """A checkpoint trained while the last partial batch was dropped (its step counts epochs of
    one step fewer) cannot continue: the start checkpoint is refused naming the file, a partial
    state is ignored with the reason."""
    train_to_epoch(DDPM_RUN, digits16, tmp_path / "e1.pt", 1, options=quiet())
    payload = dict(load_checkpoint(tmp_path / "e1.pt"))
    payload["step"] = 3  # epochs of 3 steps, as floor(N / B) where N / B = 3.x
    save_checkpoint(payload, tmp_path / "e1.pt")
    with pytest.raises(CheckpointError, match=r"e1.pt: step 3 at epoch 1 does not cut epochs"):
        train_to_epoch(DDPM_RUN, digits16, tmp_path / "e2.pt", 2, start=tmp_path / "e1.pt",
                       options=quiet())  # fmt: skip
    save_checkpoint(payload, tmp_path / "state" / PARTIAL_STATE)
    train_to_epoch(
        DDPM_RUN, digits16, tmp_path / "e2.pt", 1, options=quiet(state_dir=tmp_path / "state")
    )
    assert "its epochs are not 4 steps long" in caplog.text


def test_non_finite_loss_names_the_step(digits16, monkeypatch, tmp_path):
    trainer = Trainer(DDPM_RUN, ImageDataset.load(digits16), CPU)
    real_loss = trainer.framework.training_loss
    calls = []

    def loss_turning_nan(*args, **kwargs):
        calls.append(1)
        loss = real_loss(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(trainer.framework, "training_loss", loss_turning_nan)
    with pytest.raises(TrainingError, match=r"at step 3 \(epoch 1, step 3 of 4\)"):
        trainer.run_to(2, quiet(state_dir=tmp_path, log_every_steps=10))
    assert not (tmp_path / PARTIAL_STATE).exists()


def test_metrics_log_records_progress(digits16, tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    train_to_epoch(
        DDPM_RUN,
        digits16,
        tmp_path / "e1.pt",
        1,
        options=quiet(metrics_path=metrics, log_every_steps=2),
    )
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["step"] for r in records] == [2, 4]
    assert records[-1]["epoch"] == 1.0
    assert set(records[0]) == {"step", "epoch", "loss", "lr", "images_per_s"}
    assert records[0]["lr"] == pytest.approx(5e-4)  # epoch 0 of a 2-epoch warm-up
    assert all(r["loss"] > 0 and r["images_per_s"] > 0 for r in records)


def test_ema_warmups():
    plain = TrainingConfig(ema_decay=0.9999)
    assert ema_decay_at(1, plain) == 0.9999
    ema_pytorch = TrainingConfig(ema_decay=0.9999, ema_warmup_power=2 / 3)
    assert ema_decay_at(1, ema_pytorch) == 0.0  # first update copies the weights
    assert ema_decay_at(1000, ema_pytorch) == pytest.approx(1 - 1000 ** (-2 / 3))
    assert ema_decay_at(10**8, ema_pytorch) == 0.9999
    edm = TrainingConfig(ema_decay=0.99929, ema_rampup_ratio=0.05)
    assert ema_decay_at(100, edm) == pytest.approx(0.5 ** (1 / 5))  # half-life 5 steps
    assert ema_decay_at(10**6, edm) == 0.99929


def test_ema_warmup_follows_ema_pytorch_updates():
    """The DDAE train.py's EMA(update_after_step=0, update_every=1) of ema-pytorch 0.2.x: its
    update() copies the model at update 1 (step <= update_after_step) and at update 2 (the
    `initted` copy, then an average with itself), and averages with 1 − step^(−2/3) after."""
    config = TrainingConfig(ema_decay=0.9999, ema_warmup_power=2 / 3)
    weights = [float(3 * k + (k % 2)) for k in range(1, 7)]  # the model after each step
    reference, initted = None, False
    ours = torch.zeros(1)
    for step, weight in enumerate(weights):  # ema-pytorch's step before its increment
        if step <= 0:
            reference = weight
        else:
            if not initted:
                reference, initted = weight, True
            decay = min(1 - (1 + (step + 1 - 0 - 1)) ** (-2 / 3), 0.9999)
            reference = decay * reference + (1 - decay) * weight
        model = torch.nn.Linear(1, 1, bias=False)
        model.weight.data.fill_(weight)
        ema = torch.nn.Linear(1, 1, bias=False)
        ema.weight.data.copy_(ours.view(1, 1))
        update_ema(ema, model, ema_decay_at(step + 1, config))
        ours = ema.weight.data.view(1).clone()
        assert float(ours) == pytest.approx(reference, rel=1e-6), step + 1


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"run.training: unknown key 'learning_rate'"):
        normalize_run({**DDPM_RUN, "training": {"learning_rate": 1e-4}})
    with pytest.raises(ValueError, match=r"run.network.channel_mult\[1\]: expected an integer"):
        normalize_run({**DDPM_RUN, "network": {**TINY_UNET, "channel_mult": [1, "2"]}})
    with pytest.raises(ValueError, match="augment_dim"):
        normalize_run({**DDPM_RUN, "training": {"augment_p": 0.12}})


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path):
    """torchrun with 2 gloo workers × 8 images follows one process × 16 images, over 56 images:
    4 steps an epoch, the last one partial (2 workers × 4 images, as DataLoaderDDP deals them).

    Adam's ε is raised to 1e-4 here: with ε = 1e-8 Adam's first steps move every weight by ±lr
    whatever the gradient's size, so a gradient that is ~0 and differs in its last bit between
    the two reduction orders flips a step of 1e-3; with ε = 1e-4 the updates stay proportional
    to the gradients and the two runs agree to float32 rounding.
    """
    training = {**DDPM_RUN["training"], "adam_eps": 1e-4}
    run = {"network": {**TINY_UNET, "dropout": 0.0}, "framework": DDPM_RUN["framework"]}
    common = {
        "run": {**run, "training": training},
        "dataset": str(digits_subset(tmp_path / "train.npz", count=56)),
        "target_epoch": 2,
        "start": None,
        "device": "cpu",
        "progress": False,
    }
    for processes in (1, 2):
        job = PretrainingJob(
            output=str(tmp_path / f"{processes}.pt"),
            state_dir=str(tmp_path / f"state{processes}"),
            processes=processes,
            **common,
        )
        run_pretraining(job)
    one, two = load_checkpoint(tmp_path / "1.pt"), load_checkpoint(tmp_path / "2.pt")
    assert one["step"] == two["step"] == 8
    assert len(two["rng"]) == 2  # both workers' RNG states are kept
    moved = max((one["model"][k] - v).abs().max().item() for k, v in one["ema"].items())
    assert moved > 1e-3  # the comparison below is not between two untrained networks
    for name, value in one["model"].items():
        torch.testing.assert_close(two["model"][name], value, atol=2e-6, rtol=0, msg=name)


# --- on a GPU (the CUDA test set, `pytest -m cuda`): what only CUDA runs ---------------------


def _cuda_trainer(run: dict, digits: Path, **training_changes):
    """A Trainer of ``run`` on one CUDA device and the first epoch's order."""
    from ddae.batching import epoch_permutation
    from ddae.distributed import World

    run = {**run, "training": {**run["training"], **training_changes}}
    world = World(rank=0, size=1, device=torch.device("cuda"))
    trainer = Trainer(run, ImageDataset.load(digits), world)
    return trainer, epoch_permutation(len(trainer.images), 0, 0)


def _cuda_steps(trainer, permutation, count: int) -> list[float]:
    """``count`` steps (wrapping within the first epoch); the losses, read after the last."""
    losses = []
    for _ in range(count):
        if trainer.state.epoch_step == trainer.steps_per_epoch:
            trainer.state.epoch_step = 0
        losses.append(trainer.step(permutation))
    return [float(loss) for loss in losses]


@pytest.mark.cuda
def test_cuda_side_stream_batch_equals_the_main_streams(digits16):
    """The batch drawn on the side stream is bitwise the one the main stream draws from the
    same generator state (EDM with augmentation: flips, crops, σ, noise, augment labels)."""
    trainer, permutation = _cuda_trainer(EDM_RUN, digits16)
    state = trainer.state.generator.get_state()
    side = trainer._global_batch(permutation)
    torch.cuda.synchronize()
    trainer.state.generator.set_state(state)
    trainer._batch_stream = None  # the same draw on the main stream
    main = trainer._draw_batch(permutation)
    assert all(torch.equal(a, b) for a, b in zip(side, main, strict=True))
    assert side[3] is not None  # the augmentation ran


@pytest.mark.cuda
@pytest.mark.parametrize(("run", "most"), [(DDPM_RUN, 0), (EDM_RUN, 5)], ids=["ddpm", "edm"])
def test_cuda_training_steps_sync_with_the_host_at_most(run, most, digits16):
    """Host synchronisations inside `Trainer.step` over 5 steps after a warm-up: none for DDPM,
    one per step at most for EDM with augmentation (its padding margins' ``.tolist()``)."""
    import warnings

    trainer, permutation = _cuda_trainer(run, digits16)
    _cuda_steps(trainer, permutation, 3)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(5):
                if trainer.state.epoch_step == trainer.steps_per_epoch:
                    trainer.state.epoch_step = 0
                trainer.step(permutation)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [str(w.message).splitlines()[0] for w in caught]
    assert len(syncs) <= most, syncs


@pytest.mark.cuda
@pytest.mark.parametrize("run", [DDPM_RUN, EDM_RUN], ids=["ddpm", "edm"])
def test_cuda_bf16_training_loss_within_2_percent_of_float32(run, digits16):
    """One batch's training loss under the fast path (bf16 autocast + channels_last) against
    float32, same weights, batch and noise (eval mode: no dropout). The weights are perturbed:
    DDPM++'s zero-initialised output layers would make both losses exactly equal."""
    trainer, permutation = _cuda_trainer(run, digits16)
    x0, sigma, noise, labels = trainer._global_batch(permutation)
    model = trainer.state.network.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        fp32 = trainer.framework.training_loss(model, x0, sigma, noise, labels).mean().item()
        fast_x0, fast_noise = (t.contiguous(memory_format=torch.channels_last) for t in (x0, noise))
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = trainer.framework.training_loss(model, fast_x0, sigma, fast_noise, labels)
    assert fast.mean().item() != fp32  # bf16 really ran
    assert abs(fast.mean().item() - fp32) < 0.02 * abs(fp32)


@pytest.mark.cuda
def test_cuda_compiled_training_follows_eager(digits16):
    """``training.compile``: the torch.compile'd step gives the eager step's losses (2 %) from
    the same weights and batches (no dropout, whose compiled RNG differs)."""
    run = {**DDPM_RUN, "network": {**TINY_UNET, "dropout": 0.0}}
    eager = _cuda_steps(*_cuda_trainer(run, digits16), 4)
    compiled = _cuda_steps(*_cuda_trainer(run, digits16, compile=True), 4)
    assert compiled == pytest.approx(eager, rel=0.02)
    assert eager[-1] != eager[0]  # the weights moved


@pytest.mark.cuda
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2,
    reason="needs 2 CUDA devices (NCCL cannot put two ranks on one GPU)",
)
def test_cuda_two_process_ddp_with_compile_follows_one_process(digits16, tmp_path):
    """torchrun with 2 NCCL workers × 8 images, DDP then torch.compile (`Trainer._wrap`), in
    float32 + channels_last, follows one process × 16 images: the two differ by under 1 % of
    how far the weights moved (bf16 is off, so only the reduction order differs)."""
    changes = {"adam_eps": 1e-4, "compile": True, "bf16": False}
    run = {"network": {**TINY_UNET, "dropout": 0.0}, "framework": DDPM_RUN["framework"],
           "training": {**DDPM_RUN["training"], **changes}}  # fmt: skip
    common = {"run": run, "dataset": str(digits16), "target_epoch": 2, "start": None,
              "device": "cuda", "progress": False}  # fmt: skip
    for processes in (1, 2):
        run_pretraining(
            PretrainingJob(
                output=str(tmp_path / f"{processes}.pt"),
                state_dir=str(tmp_path / f"state{processes}"),
                processes=processes,
                **common,
            )
        )
    one, two = load_checkpoint(tmp_path / "1.pt"), load_checkpoint(tmp_path / "2.pt")
    assert one["step"] == two["step"]
    moved = max((one["model"][k] - v).abs().max().item() for k, v in one["ema"].items())
    apart = max((two["model"][k] - v).abs().max().item() for k, v in one["model"].items())
    assert moved > 1e-3 and apart < 0.01 * moved
