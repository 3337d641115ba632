"""ddae: reproduction of "Denoising Diffusion Autoencoders are Unified Self-supervised Learners".

Modules (one responsibility each): `configs` (strict config parsing), `networks` (DDPM UNet,
DDPM++, WideResNet; registry), `diffusion` (DDPM and EDM frameworks around D(x, σ)),
`sampling` (DDPM, DDIM, Heun samplers), `augment` (EDM augmentation), `data` (dataset readers,
uniform format, on-device batching), `training`, `checkpoints`, `distributed`.
"""

__version__ = "0.1.0"
