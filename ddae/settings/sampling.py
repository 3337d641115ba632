"""FID sampling's config keys (paper Sec. 4, Figures 4-5, Table 2; Appendix A): how
`ddae.fid.sample_and_score` draws its samples with the samplers of `ddae.sampling`. Imports no
torch, so the Snakefile validates them while it plans."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ddae.settings.fast_path import FastPathSwitches


@dataclass(frozen=True)
class SamplingConfig(FastPathSwitches):
    """How `sample_and_score` draws its samples (paper Sec. 4; DDAE Appendix A)."""

    # Sampler name from `ddae.sampling.SAMPLERS`. The official DDAE sample.py uses DDIM (η = 0)
    # for DDPM-framework runs and EDM's deterministic Heun sampler for EDM runs;
    # "ddpm_ancestral" is Ho et al.'s original sampler (sample.py --mode DDPM).
    sampler: Literal["ddim", "heun", "ddpm_ancestral"]
    # Number of σ levels: official defaults {'DDPM': 100, 'EDM': 18} (sample.py); 18 Heun
    # levels cost 35 network evaluations (Karras et al. 2022); DDPM ancestral uses T (1000).
    steps: int
    samples: int = 50_000  # "FID ... calculated on 50k samples" (paper Sec. 3.2; Figs 4-5, Tab 2)
    batch_size: int = 500  # images per generate() call; results do not depend on it
    seed: int = 0  # image i uses seed + i (per-image generators, as EDM's generate.py)
    # bf16, tf32, channels_last (FastPathSwitches): the CUDA fast path of the network
    # evaluations, `ddae.fast_path` (not in the paper; ignored on CPU, which samples in float32).
    # Clamp each step's x0 prediction to [−1, 1]: the authors' samplers do (FutureXiang/ddae
    # model/DDPM.py and model/EDM.py, pred_eps_(clip_x=True)), EDM's generate.py does not
    # (config.yaml: false for EDM's official checkpoint only).
    clip_denoised: bool = True
    # DDIM's ᾱ table on a DDPM (`ddae.sampling`): "authors" samples as FutureXiang/ddae
    # model/DDPM.py ddim_sample, on schedules(betas, n_T, device, 'DDIM') (T + 1 betas) down to
    # ᾱ = 1 − β_1, how every DDPM FID of the paper was sampled; "training" on the training
    # table down to σ = 0. None: "authors" for the ddim sampler on a DDPM; other samplers and
    # frameworks have no such table and refuse a value.
    ddim_table: Literal["authors", "training"] | None = None
    # Not in the paper: also score `samples` images of Gaussian noise (N(0, 1) pixels clipped to
    # [−1, 1], seeded by `seed`) with the same extractor and reference, recorded as `noise_fid`,
    # so that Figures 4-5 say when a run's samples score no better than noise (the miniature's
    # tiny DDPM runs do). Off at paper scale: it would double the FID's Inception work.
    noise_reference: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.samples < 2:
            raise ValueError(f"samples must be at least 2 for a covariance, got {self.samples}")
        if self.ddim_table is not None and self.sampler != "ddim":
            raise ValueError(
                f"ddim_table applies to the ddim sampler only, got sampler {self.sampler!r}"
            )
