"""Shared test scaffolding: the tiny networks of tests/smoke/config.yaml, digit subsets and
random-weight checkpoints. Test modules import these plain helpers (``from conftest import``)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ddae.checkpoints import save_checkpoint
from ddae.classifier_training import ClassifierOptions, ClassifierTrainer
from ddae.datasets.digits import load_digits
from ddae.datasets.format import ImageDataset
from ddae.distributed import World
from ddae.networks import build_network
from ddae.settings.pretraining import normalize_run


@pytest.fixture(scope="module")
def one_thread():
    """Tiny forwards run far faster single-threaded on a shared 2-core machine (thread start-up
    and contention dominate); modules opt in with ``pytestmark = usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``cuda`` (the CUDA test set: `pytest -m cuda`) run on a CUDA device only."""
    if item.get_closest_marker("cuda") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device: the CUDA test set runs on a GPU with `pytest -m cuda`")


@pytest.fixture
def no_tf32():
    """Float32 references on CUDA without TF32 anywhere (cuDNN allows it by default), the
    process's switches restored afterwards (monkeypatch cannot: torch.backends' are properties)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def result_provenance(values: dict) -> dict:
    """The fields `ddae.result_files` requires beside a synthetic result's numbers."""
    extra = {"extractor": "inception", "samples": 50000} if "fid" in values else {}
    return {"created_by": "tests", "checkpoint": None, **extra}


# a grid search's choice JSON (ddae.probing.grid_search) less the chosen layer and t
GRID_CHOICE = {"steps": 1000, "test_accuracy": 50.0, "created_by": "tests", "checkpoint": None}


CPU = World(rank=0, size=1, device=torch.device("cpu"))  # one process on the CPU

# the tiny networks of tests/smoke/config.yaml (16 px)
_TINY_SHAPE = {
    "resolution": 16,
    "channel_mult": [1, 2],
    "num_blocks": 1,
    "attn_resolutions": [8],
    "dropout": 0.1,
}
TINY_UNET = {"arch": "ddpm_unet", "base_channels": 32, **_TINY_SHAPE}
TINY_DDPMPP = {"arch": "ddpmpp", "model_channels": 16, **_TINY_SHAPE, "augment_dim": 9}
# the same at 8 px, where every forward pass counts (feature caches, probes)
TINY_UNET_8PX = {**TINY_UNET, "resolution": 8, "attn_resolutions": [4]}
TINY_DDPMPP_8PX = {**TINY_DDPMPP, "resolution": 8, "model_channels": 8, "attn_resolutions": [4]}


def digits_subset(
    path: Path, split: str = "train", count: int | None = None, resolution: int = 16
) -> Path:
    """The first ``count`` digits of a split (all of them without ``count``), saved to ``path``."""
    data = load_digits(resolution)[split]
    ImageDataset(data.images[:count], data.labels[:count], data.classes).save(path)
    return path


def tiny_checkpoint(
    path: Path, network: dict, framework: dict, seed: int = 0, model: bool = False
) -> Path:
    """A checkpoint of a randomly initialised network: its EMA weights (and ``model`` weights,
    the same, when asked) under the normalised run."""
    torch.manual_seed(seed)
    run = normalize_run({"network": network, "framework": framework})
    weights = build_network(run["network"]).state_dict()
    state = {"run": run, "ema": weights, **({"model": weights} if model else {})}
    save_checkpoint(state, path)
    return path


def tiny_probe_run(root: Path, train: int, test: int) -> tuple[Path, Path, Path]:
    """An untrained 8 px tiny DDPM UNet checkpoint (T = 100) and the first ``train`` / ``test``
    8×8 digits: what feature caches and probes run on."""
    return (
        tiny_checkpoint(root / "ckpt.pt", TINY_UNET_8PX, {"kind": "ddpm", "timesteps": 100}),
        digits_subset(root / "train.npz", "train", train, resolution=8),
        digits_subset(root / "test.npz", "test", test, resolution=8),
    )


def interrupted_and_resumed(
    make_trainer, state_dir: Path, monkeypatch, snapshot_every_steps: int, interrupt_at_step: int
) -> tuple[ClassifierTrainer, list, ClassifierTrainer, list, tuple[int, int]]:
    """Train once straight through; then again, interrupted (KeyboardInterrupt) at the
    `interrupt_at_step`-th optimizer step with snapshots every `snapshot_every_steps`, and
    resumed from `state_dir` by a fresh trainer. Returns (straight, its history, resumed, its
    history, the (step, epoch) it resumed at) with the histories' ``seconds`` removed."""
    straight = make_trainer()
    history = straight.run(ClassifierOptions(progress=False))
    options = ClassifierOptions(
        state_dir=state_dir, snapshot_every_steps=snapshot_every_steps, progress=False
    )
    real_step, calls = ClassifierTrainer.step, []

    def interrupted_step(self, permutation):
        calls.append(1)
        if len(calls) == interrupt_at_step:
            raise KeyboardInterrupt
        real_step(self, permutation)

    monkeypatch.setattr(ClassifierTrainer, "step", interrupted_step)
    with pytest.raises(KeyboardInterrupt):
        make_trainer().run(options)
    monkeypatch.setattr(ClassifierTrainer, "step", real_step)
    resumed = make_trainer()
    assert resumed.resume(state_dir)
    resumed_at = (resumed.state.step, resumed.state.epoch)
    resumed_history = resumed.run(options)

    def timeless(entries: list) -> list:
        return [{k: v for k, v in entry.items() if k != "seconds"} for entry in entries]

    return straight, timeless(history), resumed, timeless(resumed_history), resumed_at


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    for name, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[name], value), name


@contextlib.contextmanager
def killed_when_hanging(command: list[str], event: Path) -> Iterator[subprocess.Popen]:
    """Start ``command``, wait until it writes the file ``event`` (the moment the test wants,
    found by its event file, never a timer), yield the process, alive, and kill -9 it when the
    block ends, whatever happens in it: tests end what they start."""
    process = subprocess.Popen(command)
    try:
        while not event.exists():
            assert process.poll() is None, f"{command} ended before writing {event}"
            with contextlib.suppress(subprocess.TimeoutExpired):  # returns early if it died
                process.wait(timeout=0.05)
        yield process
    finally:
        process.kill()  # SIGKILL; nothing once the process has been reaped
        process.wait()
