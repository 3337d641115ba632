"""Frameworks: known schedule values, preconditioning identities and the D(x, σ) contract."""

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ddae.configs import ConfigError
from ddae.diffusion import DDPM, EDM, build_framework, karras_sigmas

# DESIGN.md §5: EDM's 18-step Heun schedule, σ_max first.
EDM_18 = [80, 57.59, 40.79, 28.37, 19.35, 12.91, 8.40, 5.32, 3.26, 1.92, 1.088, 0.585,
          0.296, 0.1395, 0.0599, 0.0229, 0.0075, 0.002]  # fmt: skip


def test_ddpm_alpha_bar_at_t11_of_1000():
    ddpm = DDPM(DDPM.Config())
    assert ddpm.alphas_cumprod[10].item() == pytest.approx(0.997806, abs=1e-6)
    sigma = ddpm.sigma_at_timestep(11, 1000)
    alpha_bar = ddpm.alphas_cumprod[10].item()
    assert sigma == pytest.approx(math.sqrt((1 - alpha_bar) / alpha_bar), rel=1e-12)
    assert sigma == pytest.approx(0.04689, abs=1e-5)
    assert ddpm.sigma_at_timestep(1, 1000) == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)))


def test_ddpm_timestep_range_and_steps_are_checked():
    ddpm = DDPM(DDPM.Config(timesteps=64))
    with pytest.raises(ConfigError, match="T=64"):
        ddpm.sigma_at_timestep(11, 1000)
    with pytest.raises(ConfigError, match="outside 1..64"):
        ddpm.sigma_at_timestep(65, 64)


def test_ddpm_ablation_schedules():
    """Figure 4 ablations: fewer levels keep the β range; half ranges keep T = 1000."""
    short = DDPM(DDPM.Config(timesteps=64))
    betas = 1 - short.alphas_cumprod[1:] / short.alphas_cumprod[:-1]
    assert betas[0].item() == pytest.approx(1e-4 + (0.02 - 1e-4) / 63, rel=1e-9)
    assert betas[-1].item() == pytest.approx(0.02, rel=1e-9)
    lower = DDPM(DDPM.Config(beta_max=0.01))
    upper = DDPM(DDPM.Config(beta_min=0.01))
    assert lower.sigma_max < DDPM(DDPM.Config()).sigma_max < upper.sigma_max


def test_edm_18_step_schedule_and_timesteps():
    edm = EDM(EDM.Config())
    sigmas = karras_sigmas(18, 0.002, 80.0)
    for got, expected in zip(sigmas.tolist(), EDM_18, strict=True):
        assert got == pytest.approx(expected, rel=6e-3)
    assert edm.sigma_at_timestep(4, 18) == pytest.approx(0.0599, abs=5e-5)
    assert edm.sigma_at_timestep(1, 18) == pytest.approx(0.002)
    assert edm.sigma_at_timestep(18, 18) == pytest.approx(80.0)
    assert edm.sampling_sigmas(18).tolist()[-1] == 0.0


def test_edm_preconditioning_at_sigma_data():
    c_skip, c_out, c_in, c_noise = EDM(EDM.Config()).preconditioning(torch.tensor([0.5]))
    assert c_skip.item() == pytest.approx(0.5)
    assert c_out.item() == pytest.approx(0.5 * 0.5 / math.sqrt(0.5), rel=1e-6)
    assert c_in.item() == pytest.approx(1 / math.sqrt(0.5), rel=1e-6)
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4, rel=1e-6)


def test_edm_training_sigma_is_log_normal():
    generator = torch.Generator().manual_seed(0)
    log_sigma = EDM(EDM.Config()).sample_training_sigma(200_000, generator).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.01)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.01)


class OracleEpsilon(torch.nn.Module):
    """Returns the true ε for inputs built from known (x0, ε); records what it received."""

    def __init__(self, x0, eps):
        super().__init__()
        self.x0, self.eps, self.calls = x0, eps, []

    def forward(self, x, noise_labels, augment_labels=None):
        self.calls.append((x, noise_labels))
        return self.eps


def test_ddpm_denoiser_feeds_vp_input_and_zero_based_step():
    ddpm = DDPM(DDPM.Config())
    x0, eps = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    t = torch.tensor([1, 11, 1000])
    sigma = ddpm.sigmas[t - 1]
    net = OracleEpsilon(x0, eps)
    denoised = ddpm.denoise(net, x0 + sigma.float().view(-1, 1, 1, 1) * eps, sigma)
    net_input, steps = net.calls[0]
    alpha_bar = ddpm.alphas_cumprod[t - 1].float().view(-1, 1, 1, 1)
    torch.testing.assert_close(net_input, alpha_bar.sqrt() * x0 + (1 - alpha_bar).sqrt() * eps)
    assert steps.tolist() == [0.0, 10.0, 999.0]
    torch.testing.assert_close(denoised, x0, atol=2e-3, rtol=0)  # x − σε at σ_T ≈ 157


def test_ddpm_eps_loss_is_eq2_weighted_by_inverse_sigma_squared():
    ddpm = DDPM(DDPM.Config())
    net = torch.nn.Conv2d(3, 3, 1)
    wrapped = lambda x, t, a=None: net(x)  # noqa: E731
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    sigma = ddpm.sigmas[torch.tensor([5, 50, 500, 900])]
    loss = ddpm.training_loss(wrapped, x0, sigma, noise)
    x = x0.double() + sigma.view(-1, 1, 1, 1) * noise.double()
    denoised = ddpm.denoise(wrapped, x.float(), sigma).double()
    eq2 = (denoised - x0.double()).square().flatten(1).mean(1) / sigma**2
    torch.testing.assert_close(loss.double(), eq2, rtol=2e-3, atol=0)


def test_edm_denoiser_of_zero_network_is_c_skip_scaling():
    edm = EDM(EDM.Config())
    zero = lambda x, c_noise, a=None: torch.zeros_like(x)  # noqa: E731
    x, sigma = torch.randn(2, 3, 4, 4), torch.tensor([0.1, 10.0])
    expected = (0.25 / (sigma**2 + 0.25)).view(-1, 1, 1, 1) * x
    torch.testing.assert_close(edm.denoise(zero, x, sigma), expected)


def test_build_framework_rejects_unknown_kind_and_key():
    assert isinstance(build_framework({"kind": "edm"}), EDM)
    with pytest.raises(ConfigError, match="framework.kind"):
        build_framework({"kind": "vp"})
    with pytest.raises(ConfigError, match="framework: unknown key 'timestep'"):
        build_framework({"kind": "ddpm", "timestep": 64})
    with pytest.raises(ConfigError, match="beta_min < beta_max"):
        build_framework({"kind": "ddpm", "beta_min": 0.02, "beta_max": 0.01})


@pytest.mark.parametrize(
    ("T", "steps", "count", "top"),
    [(1000, 100, 100, 990), (512, 100, 103, 510), (256, 100, 128, 254), (64, 100, 64, 63)],
)
def test_ddim_levels_follow_the_authors_respacing(T, steps, count, top):
    """FutureXiang/ddae model/DDPM.py: times = arange(0, T, T // steps) + 1 (1-based); with
    steps >= T every level (Figure 4's T = 64 at 100 DDIM steps used to raise)."""
    ddpm = DDPM(DDPM.Config(timesteps=T))
    levels = ddpm.sampling_levels(steps)
    expected = torch.arange(0, T, max(T // steps, 1))  # 0-based = the authors' times − 1
    assert levels.tolist() == expected.tolist()
    assert len(levels) == count and int(levels[-1]) == top
    sigmas = ddpm.sampling_sigmas(steps)
    assert len(sigmas) == count + 1 and sigmas[0] == ddpm.sigmas[top] and sigmas[-1] == 0
    assert torch.all(sigmas[:-1] > sigmas[1:])


def test_ddim_schedule_is_leading_subsequence():
    ddpm = DDPM(DDPM.Config())
    sigmas = ddpm.sampling_sigmas(100)
    assert len(sigmas) == 101 and sigmas[-1] == 0
    assert sigmas[0] == ddpm.sigmas[990] and sigmas[-2] == ddpm.sigmas[0]
    assert torch.all(sigmas[:-1] > sigmas[1:])


class _HostCopies(TorchDispatchMode):
    """Records host-to-device copies (`_to_copy`/`copy_` of a CPU tensor onto another device)."""

    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = kwargs.get("device")
        if func is torch.ops.aten._to_copy.default:  # tensor.to(device)
            source = args[0].device.type
            if source == "cpu" and target is not None and target.type != "cpu":
                self.copies.append(str(func))
        into_device = func is torch.ops.aten.copy_.default and args[0].device.type != "cpu"
        if into_device and args[1].device.type == "cpu":  # device_tensor.copy_(cpu_tensor)
            self.copies.append(str(func))
        return func(*args, **kwargs)


def test_ddpm_tables_are_copied_to_the_device_once_not_every_step():
    """The training loss indexed CPU tables `.to(device)` on every call: a blocking host copy
    per step on CUDA. The tables are now device buffers (meta stands in for the GPU here)."""
    ddpm = DDPM(DDPM.Config())
    x0 = torch.empty(4, 3, 8, 8, device="meta")
    sigma = torch.empty(4, dtype=torch.float64, device="meta")

    def identity_net(x, noise_labels, augment_labels=None):
        return x

    ddpm.training_loss(identity_net, x0, sigma, x0)  # first call: the one copy of the tables
    with _HostCopies() as mode:
        ddpm.training_loss(identity_net, x0, sigma, x0)
        ddpm.network_inputs(x0, sigma)
        ddpm.denoise(identity_net, x0, sigma)
    assert mode.copies == []
    assert ddpm.tables("meta")[0] is ddpm.tables("meta")[0]
    assert torch.equal(ddpm.tables("cpu")[1], ddpm.sigmas)
