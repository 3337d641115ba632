"""Official checkpoint imports (paper Appendix A) on tiny stand-ins written by the tests.

No downloads: a diffusers-format DDPM folder, an EDM-format pickle (with the persistence
structure of EDM's ``torch_utils.persistence``) and a DiT state dict are written to temporary
folders and imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_DDPMPP, TINY_UNET
from torch import nn

from ddae.checkpoints import load_checkpoint, load_network
from ddae.downloads import ChecksumError, parse_checksum
from ddae.networks import build_network
from ddae.official import OfficialImportError
from ddae.official.edm_pickle import UnsafePickleError, load_edm_pickle
from ddae.official.importers import import_official
from ddae.official.sources import download_official

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# --- DDPM: diffusers folder -------------------------------------------------------------------


# google/ddpm-cifar10-32's config.json, shrunk to the tiny smoke spec (16 px, 32/64 channels,
# one block per level); the other keys are the published file's
DDPM_CIFAR10_CONFIG = {
    "_class_name": "UNet2DModel",
    "act_fn": "silu",
    "attention_head_dim": None,
    "block_out_channels": [32, 64],
    "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
    "downsample_padding": 0,
    "flip_sin_to_cos": False,
    "freq_shift": 1,
    "in_channels": 3,
    "layers_per_block": 1,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 16,
    "time_embedding_type": "positional",
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
}


def _diffusers_ddpm_folder(folder: Path) -> nn.Module:
    """A tiny UNet2DModel laid out like google/ddpm-cifar10-32 (tests/smoke tiny DDPM spec)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    model = UNet2DModel.from_config(DDPM_CIFAR10_CONFIG)
    with torch.no_grad():  # non-trivial weights everywhere (zero-init layers would hide bugs)
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    model.save_pretrained(folder, safe_serialization=True)
    scheduler = {
        "_class_name": "DDPMScheduler",
        "beta_start": 0.0001,
        "beta_end": 0.02,
        "beta_schedule": "linear",
        "num_train_timesteps": 1000,
    }
    (folder / "scheduler_config.json").write_text(json.dumps(scheduler))
    return model.eval()


def test_ddpm_diffusers_import_matches_diffusers_outputs(tmp_path: Path) -> None:
    folder = tmp_path / "ddpm"
    reference = _diffusers_ddpm_folder(folder)
    dest = tmp_path / "epoch0.pt"
    import_official("ddpm", folder, dest, url="https://example.invalid/ddpm/")

    net, framework, run = load_network(dest)
    assert run["network"]["arch"] == "ddpm_unet"
    assert run["network"]["channel_mult"] == [1, 2]
    assert run["network"]["attn_resolutions"] == [8]
    assert run["framework"] == {
        "kind": "ddpm",
        "timesteps": 1000,
        "beta_min": 1e-4,
        "beta_max": 0.02,
    }
    assert framework.config.timesteps == 1000
    x = torch.randn(2, 3, 16, 16)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        expected = reference(x, t).sample
        assert torch.allclose(net(x, t.float()), expected, atol=1e-5)

    payload = load_checkpoint(dest)
    files = payload["source"]["files"]
    assert set(files) >= {"config.json", "diffusion_pytorch_model.safetensors"}
    assert len(files["diffusion_pytorch_model.safetensors"]["sha256"]) == 64
    assert payload["source"]["url"] == "https://example.invalid/ddpm/"


def test_ddpm_config_mismatch_names_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "ddpm"
    _diffusers_ddpm_folder(folder)
    config = json.loads((folder / "config.json").read_text())
    config["norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(OfficialImportError, match="norm_eps"):
        import_official("ddpm", folder, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_ddpm_scheduler_mismatch_names_the_key(tmp_path: Path) -> None:
    folder = tmp_path / "ddpm"
    _diffusers_ddpm_folder(folder)
    (folder / "scheduler_config.json").write_text(json.dumps({"beta_schedule": "cosine"}))
    with pytest.raises(OfficialImportError, match="beta_schedule"):
        import_official("ddpm", folder, tmp_path / "out.pt")


# --- EDM: persistence pickle ------------------------------------------------------------------

# Source "embedded" in the fixture pickle. EDM's loader would exec it; ours must never do so.
MALICIOUS_SOURCE = "open({marker!r}, 'w').write('executed')\n"


@contextlib.contextmanager
def _stand_in_persistence():
    """Register a stand-in ``torch_utils.persistence`` only while the fixture is pickled."""
    package = types.ModuleType("torch_utils")
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what the pickle references; never called here
        raise AssertionError("the stand-in reconstruct function must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    saved = {name: sys.modules.get(name) for name in ("torch_utils", "torch_utils.persistence")}
    sys.modules["torch_utils"] = package
    sys.modules["torch_utils.persistence"] = module
    try:
        yield module
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


def _make_persistent(obj: object, persistence: types.ModuleType, source: str) -> None:
    """Give ``obj`` EDM's persistent_class ``__reduce__`` (decorator subclass of its class)."""
    original = type(obj)

    def __reduce__(self):
        fields = list(super(decorated, self).__reduce__())
        fields += [None] * max(3 - len(fields), 0)
        meta = dict(
            type="class",
            version=6,
            module_src=source,
            class_name=original.__name__,
            state=fields[2],
        )
        fields[0] = persistence._reconstruct_persistent_obj
        fields[1] = (meta,)
        fields[2] = None
        return tuple(fields)

    decorated = type(original.__name__, (original,), {"__reduce__": __reduce__})
    obj.__class__ = decorated


class EDMPrecond(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.img_resolution = 16
        self.img_channels = 3
        self.label_dim = 0
        self.use_fp16 = False
        self.sigma_min = 0
        self.sigma_max = float("inf")
        self.sigma_data = 0.5
        self.model = model


class EDMLoss:
    def __init__(self) -> None:
        self.P_mean, self.P_std, self.sigma_data = -1.2, 1.2, 0.5


class AugmentPipe:
    def __init__(self) -> None:
        self.p, self.xflip, self.yflip = 0.12, 1e8, 1


_SONGUNET_KEYS = ("model_channels", "channel_mult", "num_blocks", "attn_resolutions", "dropout")


def _edm_pickle(
    path: Path,
    marker: Path,
    planted: object | None = None,
    claimed: dict | None = None,
    spec: dict = TINY_DDPMPP,
) -> nn.Module:
    """Write an EDM-style network pickle around a DDPM++ (``spec``, tiny by default); returns
    the reference network. ``claimed`` overrides the SongUNet init kwargs the pickle records (a
    forged spec)."""
    torch.manual_seed(0)
    reference = build_network(spec).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    network = build_network(spec)
    network.load_state_dict(reference.state_dict())
    network.eval().requires_grad_(False)
    del network.config  # EDM's SongUNet keeps no config object, only _init_kwargs
    precond = EDMPrecond(network)
    edm_kwargs = dict(
        img_resolution=spec["resolution"],
        in_channels=3,
        out_channels=3,
        label_dim=0,
        augment_dim=spec["augment_dim"],
        embedding_type="positional",
        encoder_type="standard",
        decoder_type="standard",
        channel_mult_noise=1,
        resample_filter=[1, 1],
        **{key: spec[key] for key in _SONGUNET_KEYS},
    )
    edm_kwargs.update(claimed or {})
    source = MALICIOUS_SOURCE.format(marker=str(marker))
    loss, augment = EDMLoss(), AugmentPipe()
    with _stand_in_persistence() as persistence:
        for module in network.modules():
            if isinstance(module, nn.ModuleDict):
                continue  # plain torch class, pickled by reference as in EDM
            module._init_kwargs = {}
            if module is network:
                module._init_kwargs = edm_kwargs
            if type(module).__name__ == "UNetBlock":
                module.skip_scale = np.sqrt(0.5)  # EDM stores a NumPy float64
            _make_persistent(module, persistence, source)
        precond._init_kwargs = dict(
            img_resolution=spec["resolution"],
            img_channels=3,
            label_dim=0,
            use_fp16=False,
            model_type="SongUNet",
            **{k: v for k, v in edm_kwargs.items() if k not in ("img_resolution", "label_dim")},
        )
        precond._init_kwargs.pop("in_channels")
        precond._init_kwargs.pop("out_channels")
        for obj in (precond, loss, augment):
            _make_persistent(obj, persistence, source)
        data = dict(
            ema=precond,
            loss_fn=loss,
            augment_pipe=augment,
            dataset_kwargs=dict(class_name="training.dataset.ImageFolderDataset", xflip=False),
        )
        if planted is not None:
            data["dataset_kwargs"]["planted"] = planted
        with path.open("wb") as handle:
            pickle.dump(data, handle)
    return reference


def test_edm_pickle_import_is_strict_and_output_equal(tmp_path: Path) -> None:
    marker = tmp_path / "source-was-executed"
    pkl = tmp_path / "edm.pkl"
    reference = _edm_pickle(pkl, marker)
    assert b"torch_utils.persistence" in pkl.read_bytes()
    assert "torch_utils" not in sys.modules

    dest = tmp_path / "epoch0.pt"
    import_official("edm", pkl, dest, url="https://example.invalid/edm.pkl")
    assert not marker.exists()  # the embedded module source never ran
    net, framework, run = load_network(dest)
    assert run["network"] == {
        "arch": "ddpmpp",
        "resolution": 16,
        "in_channels": 3,
        "out_channels": 3,
        "model_channels": 16,
        "channel_mult": [1, 2],
        "channel_mult_emb": 4,
        "num_blocks": 1,
        "attn_resolutions": [8],
        "dropout": 0.1,
        "augment_dim": 9,
        "label_dim": 0,
    }
    assert run["framework"]["kind"] == "edm" and run["framework"]["sigma_data"] == 0.5
    x = torch.randn(2, 3, 16, 16)
    noise = torch.tensor([-0.5, 0.3])
    augment = torch.randn(2, 9)
    with torch.no_grad():
        assert torch.equal(net(x, noise, augment), reference(x, noise, augment))
        sigma = torch.tensor([0.3, 2.0])
        assert torch.equal(framework.denoise(net, x, sigma), framework.denoise(reference, x, sigma))
    source = load_checkpoint(dest)["source"]
    assert source["kind"] == "edm" and len(source["files"]["edm.pkl"]["sha256"]) == 64


def test_edm_pickle_with_planted_global_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "planted-call-ran"

    class Planted:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    pkl = tmp_path / "evil.pkl"
    _edm_pickle(pkl, tmp_path / "unused", planted=Planted())
    with pytest.raises(UnsafePickleError, match=rf"{os.system.__module__}\.system"):
        load_edm_pickle(pkl)
    with pytest.raises(UnsafePickleError, match="system"):
        import_official("edm", pkl, tmp_path / "out.pt")
    assert not marker.exists()
    assert not (tmp_path / "out.pt").exists()


def test_edm_unsupported_init_kwarg_is_named(tmp_path: Path) -> None:
    from ddae.official.edm import ddpmpp_config_from_edm

    kwargs = dict(img_resolution=32, in_channels=3, out_channels=3, channel_mult=[2, 2, 2])
    assert ddpmpp_config_from_edm(kwargs)["dropout"] == 0.10  # EDM's default, not ours
    with pytest.raises(OfficialImportError, match="encoder_type"):
        ddpmpp_config_from_edm({**kwargs, "encoder_type": "residual"})
    with pytest.raises(OfficialImportError, match="bogus"):
        ddpmpp_config_from_edm({**kwargs, "bogus": 1})


# --- DiT state dict and downloads -------------------------------------------------------------


TINY_DIT_SPEC = {
    "arch": "dit",
    "input_size": 8,
    "hidden_size": 32,
    "depth": 3,
    "num_heads": 4,
    "num_classes": 10,
}


def test_dit_state_dict_import(tmp_path: Path) -> None:
    spec = dict(TINY_DIT_SPEC)
    torch.manual_seed(0)
    reference = build_network(spec).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    state_path = tmp_path / "DiT-tiny.pt"
    torch.save(reference.state_dict(), state_path)
    dest = tmp_path / "epoch0.pt"
    import_official("dit", state_path, dest, network=spec)
    net, framework, run = load_network(dest)
    assert run["framework"]["kind"] == "ddpm" and framework.config.timesteps == 1000
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(
            net(x, torch.tensor([3.0, 120.0])), reference(x, torch.tensor([3.0, 120.0]))
        )
    with pytest.raises(OfficialImportError, match="depth"):
        import_official("dit", state_path, tmp_path / "bad.pt", network={**spec, "depth": 4})


def test_checksum_parsing_and_unknown_kind(tmp_path: Path) -> None:
    assert parse_checksum("A" * 32) == ("md5", "a" * 32)
    assert parse_checksum("sha256:" + "b" * 64) == ("sha256", "b" * 64)
    with pytest.raises(ChecksumError, match="checksum"):
        parse_checksum("xyz")
    with pytest.raises(OfficialImportError, match="unknown official"):
        download_official("nope", tmp_path / "x")


def test_download_verifies_checksum(tmp_path: Path) -> None:
    payload = tmp_path / "remote.bin"
    payload.write_bytes(b"weights" * 100)
    url = payload.as_uri()
    import hashlib

    good = hashlib.sha256(payload.read_bytes()).hexdigest()
    digests = download_official("dit", tmp_path / "dl.pt", url=url, checksum=good)
    assert digests == {"dl.pt": good} and (tmp_path / "dl.pt").read_bytes() == payload.read_bytes()
    with pytest.raises(ChecksumError, match=f"{url}: downloaded sha256 is {good}, expected 0+;"):
        download_official("edm", tmp_path / "bad.pkl", url=url, checksum="0" * 64)
    assert not (tmp_path / "bad.pkl").exists()


# --- the expected run of config.yaml ----------------------------------------------------------


def test_import_checks_the_expected_network_and_framework(tmp_path: Path) -> None:
    folder = tmp_path / "ddpm"
    _diffusers_ddpm_folder(folder)
    # defaults filled in on both sides; the DDPM dropout is a training setting and ignored
    expected = {"network": {**TINY_UNET, "dropout": 0.0}, "framework": {"kind": "ddpm"}}
    dest = tmp_path / "ok.pt"
    import_official("ddpm", folder, dest, expected=expected)
    assert load_network(dest)[2]["network"]["base_channels"] == 32
    bad = tmp_path / "bad.pt"
    wider = {**expected, "network": {**TINY_UNET, "base_channels": 64}}
    with pytest.raises(OfficialImportError, match=r"network\.base_channels .* 32, .* 64"):
        import_official("ddpm", folder, bad, expected=wider)
    shorter = {**expected, "framework": {"kind": "ddpm", "timesteps": 512}}
    with pytest.raises(OfficialImportError, match=r"framework\.timesteps .* 1000, .* 512"):
        import_official("ddpm", folder, bad, expected=shorter)
    with pytest.raises(OfficialImportError, match=r"framework\.kind .* 'ddpm', .* 'edm'"):
        import_official("ddpm", folder, bad, expected={"framework": {"kind": "edm"}})
    with pytest.raises(OfficialImportError, match="unknown key 'training'"):
        import_official("ddpm", folder, bad, expected={**expected, "training": {}})
    assert not bad.exists()

    pkl = tmp_path / "edm.pkl"
    _edm_pickle(pkl, tmp_path / "marker")
    edm_run = {"network": TINY_DDPMPP, "framework": {"kind": "edm", "sigma_data": 0.5}}
    import_official("edm", pkl, tmp_path / "edm.pt", expected=edm_run)
    with pytest.raises(OfficialImportError, match=r"network\.dropout .* 0\.1, .* 0\.13"):
        import_official(
            "edm",
            pkl,
            bad,
            expected={**edm_run, "network": {**TINY_DDPMPP, "dropout": 0.13}},
        )
    assert not bad.exists()


def test_dit_import_checks_the_expected_run(tmp_path: Path) -> None:
    spec = dict(TINY_DIT_SPEC)
    torch.manual_seed(0)
    state_path = tmp_path / "DiT-tiny.pt"
    torch.save(build_network(spec).state_dict(), state_path)
    run = {"network": spec, "framework": {"kind": "ddpm", "timesteps": 1000}}
    import_official("dit", state_path, tmp_path / "ok.pt", network=spec, expected=run)
    wrong = {
        r"network\.num_heads .* 4, .* 8": {**run, "network": {**spec, "num_heads": 8}},
        r"framework\.beta_max": {**run, "framework": {"kind": "ddpm", "beta_max": 0.01}},
    }
    for message, expected in wrong.items():
        with pytest.raises(OfficialImportError, match=message):
            import_official("dit", state_path, tmp_path / "bad.pt", network=spec, expected=expected)
    assert not (tmp_path / "bad.pt").exists()
    assert not (tmp_path / "bad.pt").exists()
