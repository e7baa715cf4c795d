"""ddpmlab: Denoising Diffusion Probabilistic Models you can read, run on a laptop and scale to a GPU.

The core objects, from the bottom up:

- :func:`make_schedule` / :class:`NoiseSchedule`: the betas and everything derived from them.
- :class:`GaussianDiffusion`: forward process q(x_t | x_0), posterior, eps/x0/v conversions, loss.
- :class:`DDPMSampler`, :class:`DDIMSampler`: the reverse process; :class:`DPMSolverSampler`
  (DPM-Solver++ multistep) and :class:`HeunSampler` (Karras et al.): the same samples in fewer steps.
- :class:`ClassifierFreeGuidance`, :class:`ClassifierGuidance`: guided denoisers.
"""

from ddpmlab.diffusion import GaussianDiffusion
from ddpmlab.guidance import ClassifierFreeGuidance, ClassifierGuidance
from ddpmlab.samplers import make_sampler
from ddpmlab.sampling import DDIMSampler, DDPMSampler
from ddpmlab.schedules import NoiseSchedule, make_schedule, respace
from ddpmlab.solvers import DPMSolverSampler, HeunSampler

__version__ = "0.1.0"

__all__ = [
    "make_schedule",
    "respace",
    "NoiseSchedule",
    "GaussianDiffusion",
    "DDPMSampler",
    "DDIMSampler",
    "DPMSolverSampler",
    "HeunSampler",
    "make_sampler",
    "ClassifierFreeGuidance",
    "ClassifierGuidance",
]
