"""Exact models shared by the tests (imported as ``from oracles import ...``)."""

from __future__ import annotations

import torch

from ddpmlab.data.toy import OptimalDenoiser


class OracleWithNull(torch.nn.Module):
    """The exact conditional denoiser of ``mixture``, unconditional for the null class -1 (ideal
    condition dropout): what classifier-free guidance needs from a model."""

    def __init__(self, mixture, schedule):
        super().__init__()
        self.oracle = OptimalDenoiser(mixture, schedule)

    def forward(self, x, t, cond):
        out = torch.empty_like(x)
        null = cond == -1
        if bool(null.any()):
            out[null] = self.oracle(x[null], t[null])
        if bool((~null).any()):
            out[~null] = self.oracle(x[~null], t[~null], cond[~null])
        return out
