"""Samplers against the exact denoiser of a Gaussian data distribution N(μ, s²·I).

For such data D(x, σ) = μ + s²/(s² + σ²)·(x − μ) exactly, so a correct sampler must return
samples whose mean and variance are μ and s² (up to the finite σ_max of the prior and the
sampler's discretisation error, bounded below).
"""

import pytest
import torch

from ddae.diffusion import DDPM, EDM
from ddae.fast_path import FastPath
from ddae.sampling import SAMPLERS, PerImageNoise, sampling_schedule

MEAN, STD = 0.3, 0.5
SHAPE = (1, 8, 8)


def gaussian_denoiser(x, sigma):
    shrink = (STD**2 / (STD**2 + sigma**2)).view(-1, 1, 1, 1)
    return MEAN + shrink * (x - MEAN)


def run(framework, sampler, steps, num_images):
    sigmas = sampling_schedule(framework, sampler, steps)
    noise = PerImageNoise(range(num_images), "cpu")
    x = noise.randn(SHAPE) * framework.prior_std(float(sigmas[0]))
    return SAMPLERS[sampler](gaussian_denoiser, x, sigmas, noise)


@pytest.mark.parametrize(
    ("framework", "sampler", "steps", "num_images", "std_tolerance"),
    [
        (EDM(EDM.Config()), "heun", 18, 2048, 0.035),  # 131k values: s.e. of the mean 0.0014
        (DDPM(DDPM.Config()), "ddim", 100, 2048, 0.02),
        (DDPM(DDPM.Config()), "heun", 18, 2048, 0.02),
        (DDPM(DDPM.Config()), "ddpm_ancestral", 1000, 256, 0.015),  # stochastic, all T levels
    ],
)
def test_sampler_reproduces_gaussian_moments(framework, sampler, steps, num_images, std_tolerance):
    samples = run(framework, sampler, steps, num_images)
    assert samples.mean().item() == pytest.approx(MEAN, abs=0.01)
    assert samples.std().item() == pytest.approx(STD, abs=std_tolerance)


def test_ddpm_prior_is_vp_standard_normal():
    """With T = 64 the data is not destroyed (ᾱ_T ≈ 0.53), so starting from N(0, I) as DDPM does
    biases the samples towards 0: the reason the paper's T = 64 model cannot generate."""
    ddpm = DDPM(DDPM.Config(timesteps=64))
    assert ddpm.prior_std(ddpm.sigma_max) ** -2 == pytest.approx(ddpm.alphas_cumprod[-1].item())
    samples = run(ddpm, "ddpm_ancestral", 64, 256)
    assert samples.mean().item() < MEAN - 0.05


def test_heun_18_steps_costs_35_evaluations_and_is_deterministic():
    calls = []

    def counting(x, sigma):
        calls.append(sigma[0].item())
        return gaussian_denoiser(x, sigma)

    sigmas = sampling_schedule(EDM(EDM.Config()), "heun", 18)
    x = torch.randn(4, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    first = SAMPLERS["heun"](counting, x * 80, sigmas)
    assert len(calls) == 35
    second = SAMPLERS["heun"](gaussian_denoiser, x * 80, sigmas)
    assert torch.equal(first, second)


def test_deterministic_samplers_converge_to_closed_form():
    """For Gaussian data the probability-flow ODE maps x_T to μ + s/√(s²+σ_T²)·(x_T − μ)."""
    generator = torch.Generator().manual_seed(2)
    x_T = torch.randn(16, *SHAPE, dtype=torch.float64, generator=generator) * 80
    exact = MEAN + STD / (STD**2 + 80.0**2) ** 0.5 * (x_T - MEAN)
    edm = EDM(EDM.Config())
    errors = {}
    for sampler, steps in [("heun", 18), ("heun", 200), ("ddim", 200), ("ddim", 1000)]:
        samples = SAMPLERS[sampler](gaussian_denoiser, x_T, edm.sampling_sigmas(steps))
        errors[sampler, steps] = (samples - exact).abs().max().item()
    assert errors["heun", 200] < 1e-3 < errors["heun", 18] < 0.1  # 2nd order: error ∝ 1/N²
    assert errors["ddim", 1000] < 5e-3 < errors["ddim", 200] < 0.05  # 1st order: ∝ 1/N


def test_per_image_noise_does_not_depend_on_batching():
    together = PerImageNoise([5, 6, 7], "cpu").randn((2, 3))
    alone = PerImageNoise([7], "cpu").randn((2, 3))
    assert torch.equal(together[2], alone[0])


def test_ancestral_needs_noise():
    with pytest.raises(ValueError, match="noise source"):
        SAMPLERS["ddpm_ancestral"](gaussian_denoiser, torch.zeros(1, 1), torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("sampler", ["heun", "ddim"])
def test_generate_is_seeded_per_image_and_batch_independent(sampler):
    from ddae.networks import build_network
    from ddae.sampling import generate

    torch.manual_seed(0)
    net = build_network(
        {"arch": "ddpmpp", "resolution": 8, "model_channels": 16, "channel_mult": [1],
         "num_blocks": 1, "attn_resolutions": [], "augment_dim": 0}
    ).eval()  # fmt: skip
    framework = EDM(EDM.Config())
    together = generate(framework, net, (3, 8, 8), [4, 5, 6], sampler=sampler, steps=4)
    alone = generate(framework, net, (3, 8, 8), [6], sampler=sampler, steps=4)
    assert together.shape == (3, 3, 8, 8) and together.dtype == torch.float32
    assert together.abs().max() <= 1.0
    torch.testing.assert_close(together[2:], alone, atol=1e-6, rtol=0)
    assert not torch.allclose(together[0], together[1])


def test_clip_denoised_clamps_every_x0_prediction():
    """The authors' samplers clamp x0 to [−1, 1] each step (pred_eps_(clip_x=True)); a network
    whose D overshoots the data range gives different samples with and without the clamp."""
    from torch import nn

    from ddae.sampling import generate

    class Overshoot(nn.Module):  # ε̂ mixes pixels (a mirror image): D leaves [−1, 1]
        def forward(self, x, noise_labels, augment_labels=None):
            return 0.5 * x.flip(-1)

    ddpm = DDPM(DDPM.Config(timesteps=64))
    seen = []
    clipped = generate(
        ddpm, Overshoot(), SHAPE, range(4), sampler="ddim", steps=100, clip_denoised=True
    )
    plain = generate(ddpm, Overshoot(), SHAPE, range(4), sampler="ddim", steps=100)
    assert float((clipped - plain).abs().max()) > 0.05
    # with the clamp every x0 prediction lies in [−1, 1]: record them through the denoiser
    from ddae import sampling

    inner = sampling._float_denoiser(ddpm, Overshoot(), FastPath(), clip=True)
    x = torch.randn(2, *SHAPE, dtype=torch.float64) * 10
    for sigma in ddpm.sampling_sigmas(100)[:-1]:
        seen.append(inner(x, sigma.expand(2)))
    assert all(float(d.abs().max()) <= 1.0 for d in seen)


def _tiny_ddpmpp():
    from ddae.networks import build_network

    torch.manual_seed(0)
    return build_network(
        {"arch": "ddpmpp", "resolution": 8, "model_channels": 32, "channel_mult": [1, 2],
         "num_blocks": 1, "attn_resolutions": [4], "augment_dim": 0}
    ).eval()  # fmt: skip


def test_generate_on_cpu_ignores_the_cuda_fast_path_bitwise():
    """The fast path (bf16, TF32, channels_last) is on by default but only on CUDA: on CPU the
    default call samples exactly as the float32 path."""
    from ddae.sampling import generate, sample_images

    framework, net = EDM(EDM.Config()), _tiny_ddpmpp()
    default = generate(framework, net, (3, 8, 8), [1, 2], sampler="heun", steps=6)
    fp32 = sample_images(
        framework, net, (3, 8, 8), [1, 2], sampler="heun", steps=6, device="cpu",
        fast=FastPath(), clip_denoised=False,
    )  # fmt: skip
    assert torch.equal(default, fp32)


@pytest.mark.parametrize(("sampler", "steps"), [("heun", 18), ("ddim", 100)])
def test_bf16_channels_last_path_matches_float32_within_tolerance(sampler, steps):
    """The fast path's network evaluations (bf16 autocast + channels_last, run here on CPU)
    give samples within 0.05 (max) and 0.01 (mean) of float32 on the [−1, 1] scale, i.e.
    within about 6 and 1.3 uint8 levels, and the same per-image mean to 0.01."""
    from ddae.sampling import sample_images

    framework = EDM(EDM.Config()) if sampler == "heun" else DDPM(DDPM.Config())
    common = {"sampler": sampler, "steps": steps, "device": "cpu", "clip_denoised": False}
    fp32 = sample_images(framework, _tiny_ddpmpp(), (3, 8, 8), range(8), fast=FastPath(), **common)
    on = FastPath(bf16=True, tf32=True, channels_last=True)
    fast = sample_images(framework, _tiny_ddpmpp(), (3, 8, 8), range(8), fast=on, **common)
    difference = (fast - fp32).abs()
    assert float(difference.max()) < 0.05 and float(difference.mean()) < 0.01
    assert float(difference.max()) > 0  # bf16 really ran
    means = fast.mean(dim=(1, 2, 3)), fp32.mean(dim=(1, 2, 3))
    torch.testing.assert_close(*means, atol=0.01, rtol=0)


def test_tf32_switch_is_restored():
    from ddae.fast_path import tf32_matmul

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    with tf32_matmul(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


# --- DDIM: the authors' sampler, transcribed --------------------------------------------------

SMALL_DDPM = {"timesteps": 20, "beta_min": 1e-4, "beta_max": 0.2}  # ᾱ_T ≈ 0.13


def toy_eps(x, step):
    """A deterministic ε̂(x_t, step) of the 1-based training step: a mirror image (so D leaves
    [−1, 1] and the clamp acts) with a step-dependent gain and offset (so a wrong step shows)."""
    step = step.reshape(-1, *[1] * (x.ndim - 1))
    return (0.5 + 0.1 * torch.sin(step)) * x.flip(-1) + 0.05 * torch.cos(0.7 * step)


class ToyEps(torch.nn.Module):
    """`toy_eps` behind our network signature: the noise label is the 0-based step t − 1."""

    def forward(self, x, noise_labels, augment_labels=None):
        return toy_eps(x, noise_labels + 1)


def authors_ddim_sample(x_T, betas, n_T, steps, schedule_type="DDIM"):
    """FutureXiang/ddae model/DDPM.py ``ddim_sample`` (η = 0, hence z unused) with
    ``pred_eps_(clip_x=True)`` and ``schedules(betas, n_T, device, type)``, transcribed line by
    line in float64 on the CPU; the network gets ``t / n_T`` as theirs, `toy_eps` its step t.
    Returns x_i in [−1, 1] space (their final ``unnormalize_to_zero_to_one`` left out)."""
    beta1, beta2 = betas
    if schedule_type == "DDPM":
        beta_t = torch.cat([torch.tensor([0.0], dtype=torch.float64),
                            torch.linspace(beta1, beta2, n_T, dtype=torch.float64)])  # fmt: skip
    else:
        beta_t = torch.linspace(beta1, beta2, n_T + 1, dtype=torch.float64)
    alpha_t = 1 - beta_t
    alphabar_t = torch.cumsum(torch.log(alpha_t), dim=0).exp()

    def nn_model(x, t):
        return toy_eps(x, t * n_T)

    x_i = x_T
    times = torch.arange(0, n_T, n_T // steps) + 1
    times = list(reversed(times.int().tolist())) + [0]
    time_pairs = list(zip(times[:-1], times[1:], strict=True))
    for time, time_next in time_pairs:
        t_is = torch.tensor([time / n_T], dtype=torch.float64).repeat(x_i.shape[0])
        alpha = alphabar_t[time]
        eps = nn_model(x_i, t_is)  # pred_eps_:
        denoised = (x_i - (1 - alpha).sqrt() * eps) / alpha.sqrt()  # pred_x0_from_eps
        denoised = torch.clip(denoised, -1.0, 1.0)
        eps = (x_i - denoised * alpha.sqrt()) / (1 - alpha).sqrt()  # pred_eps_from_x0
        alpha_next = alphabar_t[time_next]
        c1 = 0.0  # eta * (...).sqrt() with eta = 0
        c2 = (1 - alpha_next - c1**2).sqrt()
        x_i = alpha_next.sqrt() * denoised + c2 * eps
    return x_i


def _toy_generate(**options):
    from ddae.sampling import generate

    ddpm = DDPM(DDPM.Config(**SMALL_DDPM))
    options = {"sampler": "ddim", "steps": 5, "clip_denoised": True, **options}
    return generate(ddpm, ToyEps(), (2, 4, 4), range(6), **options)


@pytest.mark.parametrize(("ddim_table", "schedule_type"), [(None, "DDIM"), ("training", "DDPM")])
def test_ddim_equals_the_authors_loop_on_their_table(ddim_table, schedule_type):
    """Our DDIM (σ currency, float32 network) against their loop, T = 20 and 5 steps (levels
    17, 13, 9, 5, 1): the default is their DDIM table, and "training" is their same loop on the
    training table (their ``schedules(..., 'DDPM')``, ᾱ_0 = 1), both to 1e-6. Images are
    compared in [−1, 1], where ours clamps and their save_image clamps [0, 1]."""
    x_T = PerImageNoise(range(6), "cpu").randn((2, 4, 4))  # x_T ~ N(0, I) as theirs (VP)
    betas = (SMALL_DDPM["beta_min"], SMALL_DDPM["beta_max"])
    theirs = authors_ddim_sample(x_T, betas, SMALL_DDPM["timesteps"], 5, schedule_type)
    ours = _toy_generate(ddim_table=ddim_table).double()
    assert float((theirs.abs() < 1).double().mean()) > 0.3  # not all saturated by the clamp
    torch.testing.assert_close(ours, theirs.clamp(-1.0, 1.0), atol=1e-6, rtol=0)
    other_type = "DDPM" if schedule_type == "DDIM" else "DDIM"
    other = authors_ddim_sample(x_T, betas, SMALL_DDPM["timesteps"], 5, other_type)
    assert float((ours - other.clamp(-1.0, 1.0)).abs().max()) > 0.05  # the tables differ here
    unclipped = _toy_generate(ddim_table=ddim_table, clip_denoised=False)
    assert float((ours - unclipped).abs().max()) > 0.5  # and their x0 clamp acts


def test_authors_ddim_table_values():
    """FutureXiang/ddae schedules(betas, 1000, 'DDIM') against the training table (the figures of
    DESIGN.md): σ +0.5 % at most levels, +7 % at t = 11, +48 % at t = 1; the last level
    ᾱ = 1 − β_1, σ ≈ 0.01, and the output scaled by √(1 − β_1) ≈ 0.99995."""
    ddpm = DDPM(DDPM.Config())
    authors = ddpm.sampling_table("authors_ddim")
    ratio = authors.sigmas / ddpm.sigmas  # index t − 1: step t
    assert float(ratio[0]) == pytest.approx(1.48, abs=0.01)
    assert float(ratio[10]) == pytest.approx(1.07, abs=0.01)
    assert float(ratio[200:].max()) < 1.006 and float(ratio.min()) > 1.0
    sigmas = sampling_schedule(ddpm, "ddim", 100)
    assert len(sigmas) == 101 and float(sigmas[-1]) == pytest.approx(0.0100005, rel=1e-6)
    assert torch.equal(sigmas[:-1], authors.sigmas[torch.arange(990, -1, -10)])  # t = 991, ..., 1
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    assert float(authors.final_image(x)[0, 0, 0, 0]) == pytest.approx(0.99995, abs=1e-6)
    # the network at level t gets step t − 1 (0-based) and the input scale √ᾱ_ddim[t]
    level = authors.sigmas[10:11]
    net_input, label = authors.network_inputs(x[:1], level)
    assert label.tolist() == [10.0]
    assert float(net_input[0, 0, 0, 0]) == pytest.approx(float(authors.alphas_cumprod[10]) ** 0.5)


def test_training_ddim_table_keeps_the_training_schedule_bitwise():
    """ddim_table "training" is the DDIM this project had before the authors' table: the
    training table's levels, σ = 0 at the end and the last state as the image, bitwise."""
    ddpm = DDPM(DDPM.Config())
    levels = ddpm.sampling_levels(100).flip(0)
    old = torch.cat([ddpm.sigmas[levels], torch.zeros(1, dtype=torch.float64)])
    assert torch.equal(sampling_schedule(ddpm, "ddim", 100, "training"), old)
    assert ddpm.sampling_table("training") is ddpm
    x = torch.randn(2, 1, 3, 3, dtype=torch.float64)
    assert torch.equal(ddpm.final_image(x), x)


@pytest.mark.parametrize(
    ("framework", "sampler"), [(DDPM(DDPM.Config()), "heun"), (EDM(EDM.Config()), "ddim")]
)
def test_ddim_table_is_refused_where_there_is_none(framework, sampler):
    from ddae.configs import ConfigError

    with pytest.raises(ConfigError, match="ddim_table: 'authors' applies to the ddim sampler"):
        sampling_schedule(framework, sampler, 18, "authors")
    assert sampling_schedule(framework, sampler, 18)[-1] == 0  # unset: nothing to choose
    with pytest.raises(ConfigError, match="ddim_table: must be one of"):
        sampling_schedule(DDPM(DDPM.Config()), "ddim", 10, "author")


def test_authors_table_trains_nothing():
    authors = DDPM(DDPM.Config()).sampling_table("authors_ddim")
    with pytest.raises(ValueError, match="'authors_ddim' table is for sampling"):
        authors.sample_training_sigma(2, torch.Generator())


@pytest.mark.cuda
@pytest.mark.usefixtures("no_tf32")
@pytest.mark.parametrize(("sampler", "steps"), [("heun", 18), ("ddim", 100)])
def test_cuda_default_fast_path_matches_float32_within_tolerance(sampler, steps):
    """`generate`'s default on CUDA (bf16, TF32, channels_last) against float32 on CUDA (TF32 off
    everywhere): the bounds of `test_bf16_channels_last_path_matches_float32_within_tolerance`."""
    from ddae.sampling import generate

    framework = EDM(EDM.Config()) if sampler == "heun" else DDPM(DDPM.Config())
    common = {"sampler": sampler, "steps": steps, "device": "cuda"}
    off = {"bf16": False, "tf32": False, "channels_last": False}
    fp32 = generate(framework, _tiny_ddpmpp().cuda(), (3, 8, 8), range(8), **common, **off)
    fast = generate(framework, _tiny_ddpmpp().cuda(), (3, 8, 8), range(8), **common)
    difference = (fast - fp32).abs()
    assert fast.is_cuda and float(difference.max()) < 0.05 and float(difference.mean()) < 0.01
    assert float(difference.max()) > 0  # bf16 really ran
    means = fast.mean(dim=(1, 2, 3)), fp32.mean(dim=(1, 2, 3))
    torch.testing.assert_close(*means, atol=0.01, rtol=0)
