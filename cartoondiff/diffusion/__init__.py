"""The diffusion process: schedules, forward process and loss, samplers and guidance."""

from cartoondiff.diffusion.process import PREDICTIONS, Diffusion
from cartoondiff.diffusion.samplers import (
    SAMPLERS,
    Sampler,
    guided_eps,
    logsnr_timesteps,
    timesteps,
)
from cartoondiff.diffusion.schedules import ScheduleError, check_betas, cosine_betas, linear_betas

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "Diffusion",
    "Sampler",
    "ScheduleError",
    "check_betas",
    "cosine_betas",
    "guided_eps",
    "linear_betas",
    "logsnr_timesteps",
    "timesteps",
]
