"""Spiking LSTM (the paper's ``spikingLSTM``; docs/RESULTS.md, Figure 2): an LSTM whose nonlinearities are spikes.

One step, for input x_t and the last output h_{t-1}, with every gate a Dense(x) with bias plus a
Dense(h) without bias (Glorot-uniform, bias 0):

    f_t, i_t, o_t = H(W_f x_t + U_f h_{t-1} + b_f), ...      gates in {0, 1}
    g_t = S(W_g x_t + U_g h_{t-1} + b_g)                       candidate in {-1, 1}
    c_t = f_t c_{t-1} + i_t g_t
    h_t = o_t S(c_t)                                           output in {-1, 0, 1}

H is the Heaviside step (strict ``> 0``) with the chosen surrogate gradient (SG) and S(v) = -1 + 2 H(v)
the "tanh spike", whose SG is therefore doubled. The output is a signed spike: |h_t| = o_t is binary,
and the activity a stack records for it (rates, sparsity loss) is |h_t|.

``SLSTM(input, hidden)`` runs a sequence [T, B, input] (``batch_first=True``: [B, T, input]):
``h, state = layer(x, state)``; ``layer(x, return_voltage=True)`` gives ``(h, c, state)``, the cell state
c playing the part of the LIF layers' membrane voltage. The state is explicit: ``SLSTMState(h, c)``,
zeros when not given. Input dtype: as the LIF layers (bool and integer spikes converted to the weights'
dtype, another float precision refused with what to call). The backward through time is written by
hand (``run_slstm_fused``, about twice as fast as autograd through the loop, same gradients); a learnable
SG (trainable dampening / sharpness) takes the autograd loop ``run_slstm``.

Width: 1/3 of a LIF layer's (``WIDTH_FACTOR``, the 2022 code's choice; ``matched_width``). With four
gates each sLSTM unit has about 4 (input + hidden) weights against the LIF unit's (input + hidden),
so a third of the width gives about the same parameter count when the input is much wider than the
layer: 64,260 against 57,216 for 2 x 21 sLSTM / 2 x 64 LIF on 700-channel SHD (1.12 x).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..surrogate import SurrogateGradient, heaviside
from .layers import prepare_input

__all__ = ["SLSTM", "WIDTH_FACTOR", "SLSTMState", "matched_width", "run_slstm", "run_slstm_fused", "tanh_spike"]

WIDTH_FACTOR = 1.0 / 3.0  # sLSTM width / LIF width for a similar parameter count (module doc)
GATES = 4  # f, i, o, candidate: the rows of weight_ih / weight_hh / bias, in this order


class SLSTMState(NamedTuple):
    """State carried between steps: the last output h (in {-1, 0, 1}) and the cell state c, each [B, H]."""

    h: Tensor
    c: Tensor


def matched_width(lif_width: int) -> int:
    """The sLSTM width that replaces a LIF layer of ``lif_width`` neurons: round(WIDTH_FACTOR * width)."""
    if not isinstance(lif_width, int) or isinstance(lif_width, bool) or lif_width < 1:
        raise ValueError(f"lif_width must be a positive integer (accepted range [1, inf)), got {lif_width!r}")
    return max(1, round(lif_width * WIDTH_FACTOR))


def tanh_spike(v: Tensor, spike_fn: Callable[[Tensor], Tensor]) -> Tensor:
    """S(v) = -1 + 2 H(v): the spiking tanh; its gradient is twice the SG of ``spike_fn``."""
    return 2.0 * spike_fn(v) - 1.0


def run_slstm(
    wx: Tensor, weight_hh: Tensor, state: SLSTMState, spike_fn: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, SLSTMState]:
    """The recurrence over a sequence: ``wx`` [T, B, 4H] is W x_t + b for every step (gate blocks f, i, o,
    candidate); returns outputs h [T, B, H], cell states c [T, B, H] and the last state. ``spike_fn`` is
    H with its SG (any callable: the tests pass a smooth one to compare with finite differences)."""
    steps, batch = wx.shape[0], wx.shape[1]
    hidden = state.c.shape[1]
    h, c = state
    hs, cs = [], []
    for t in range(steps):
        pre = (wx[t] + h @ weight_hh.t()).view(batch, GATES, hidden)
        gates = spike_fn(pre[:, :3])  # [B, 3, H]: a per-neuron SG broadcasts over the last axis
        c = gates[:, 0] * c + gates[:, 1] * tanh_spike(pre[:, 3], spike_fn)
        h = gates[:, 2] * tanh_spike(c, spike_fn)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), torch.stack(cs), SLSTMState(h, c)


class _FusedSLSTM(torch.autograd.Function):
    """``run_slstm`` with a hand-written backward through time (the SG of ``sg`` for every step H): the
    same values and gradients as autograd through the loop, without a graph of ~15 nodes per step."""

    @staticmethod
    def forward(ctx, wx: Tensor, weight_hh: Tensor, h0: Tensor, c0: Tensor, sg: SurrogateGradient):  # type: ignore[override]
        steps, batch = wx.shape[0], wx.shape[1]
        hidden = c0.shape[1]
        pres = wx.new_empty(steps, batch, GATES, hidden)
        hs, cs = wx.new_empty(steps, batch, hidden), wx.new_empty(steps, batch, hidden)
        h, c = h0, c0
        w_t = weight_hh.t()
        for t in range(steps):
            pre = (wx[t] + h @ w_t).view(batch, GATES, hidden)
            pres[t] = pre
            gates = heaviside(pre[:, :3])
            c = gates[:, 0] * c + gates[:, 1] * (2.0 * heaviside(pre[:, 3]) - 1.0)
            h = gates[:, 2] * (2.0 * heaviside(c) - 1.0)
            hs[t], cs[t] = h, c
        ctx.save_for_backward(weight_hh, h0, c0, pres, hs, cs)
        ctx.sg = sg
        return hs, cs, h.clone(), c.clone()

    @staticmethod
    def backward(ctx, grad_hs: Tensor, grad_cs: Tensor, grad_h: Tensor, grad_c: Tensor):  # type: ignore[override]
        weight_hh, h0, c0, pres, hs, cs = ctx.saved_tensors
        sg: SurrogateGradient = ctx.sg
        steps, batch, _, hidden = pres.shape
        grad_hs = torch.zeros_like(hs) if grad_hs is None else grad_hs
        grad_cs = torch.zeros_like(cs) if grad_cs is None else grad_cs
        gh = torch.zeros_like(h0) if grad_h is None else grad_h.clone()  # dL/dh_t from later steps
        gc = torch.zeros_like(c0) if grad_c is None else grad_c.clone()  # dL/dc_t from later steps
        d_pre = torch.empty_like(pres)
        for t in range(steps - 1, -1, -1):
            pre, c = pres[t], cs[t]
            c_prev = cs[t - 1] if t > 0 else c0
            gates = heaviside(pre[:, :3])
            cand = 2.0 * heaviside(pre[:, 3]) - 1.0
            gh = gh + grad_hs[t]
            d_o = gh * (2.0 * heaviside(c) - 1.0)
            dc = gc + grad_cs[t] + gh * gates[:, 2] * 2.0 * sg.derivative(c)
            slopes = sg.derivative(pre)  # [B, 4, H]
            d = d_pre[t]
            d[:, 0] = dc * c_prev * slopes[:, 0]
            d[:, 1] = dc * cand * slopes[:, 1]
            d[:, 2] = d_o * slopes[:, 2]
            d[:, 3] = dc * gates[:, 1] * 2.0 * slopes[:, 3]
            gc = dc * gates[:, 0]
            gh = d.reshape(batch, GATES * hidden) @ weight_hh
        flat = d_pre.reshape(steps, batch, GATES * hidden)
        h_prev = torch.cat([h0[None], hs[:-1]])
        grad_w = torch.einsum("tbg,tbh->gh", flat, h_prev)
        return flat, grad_w, gh, gc, None


def run_slstm_fused(
    wx: Tensor, weight_hh: Tensor, state: SLSTMState, sg: SurrogateGradient
) -> tuple[Tensor, Tensor, SLSTMState]:
    """``run_slstm`` with ``sg``'s step and SG, its backward written by hand (``_FusedSLSTM``); the SG's
    dampening and sharpness get no gradient (use ``run_slstm`` for a learnable SG)."""
    hs, cs, h, c = _FusedSLSTM.apply(wx, weight_hh, state.h, state.c, sg)
    return hs, cs, SLSTMState(h, c)


def _check_size(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer (accepted range [1, inf)), got {value!r}")
    return value


class SLSTM(nn.Module):
    """Spiking LSTM layer over a whole sequence (module doc). ``spike_fn`` is the gates' H with its SG
    (default fast-sigmoid); its dampening / sharpness are scalars or per-neuron (shape (hidden_size,))."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        spike_fn: SurrogateGradient | None = None,
        bias: bool = True,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        self.input_size = _check_size("input_size", input_size)
        self.hidden_size = _check_size("hidden_size", hidden_size)
        self.batch_first = bool(batch_first)
        self.spike_fn = spike_fn if spike_fn is not None else SurrogateGradient("fast-sigmoid")
        if not isinstance(self.spike_fn, SurrogateGradient):
            raise ValueError(  # noqa: TRY004 (bad input is a ValueError throughout spikestab)
                f"spike_fn must be a spikestab.surrogate.SurrogateGradient, got {type(spike_fn).__name__}"
            )
        for name in ("dampening", "sharpness"):
            shape = tuple(getattr(self.spike_fn, name).shape)
            if shape not in ((), (1,), (hidden_size,)):
                raise ValueError(
                    f"spike_fn.{name} must be a scalar or have shape ({hidden_size},) for a layer of "
                    f"{hidden_size} neurons, got shape {shape}"
                )
        self.weight_ih = nn.Parameter(torch.empty(GATES * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(GATES * hidden_size, hidden_size))
        if bias:
            self.bias = nn.Parameter(torch.zeros(GATES * hidden_size))
        else:
            self.register_buffer("bias", torch.zeros(GATES * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform per gate (each gate is its own Dense layer in the official code), bias 0."""
        for w in (self.weight_ih, self.weight_hh):
            for block in w.data.chunk(GATES, 0):
                nn.init.xavier_uniform_(block)
        if isinstance(self.bias, nn.Parameter):
            nn.init.zeros_(self.bias)

    def initial_state(self, batch: int, like: Tensor) -> SLSTMState:
        zeros = torch.zeros(batch, self.hidden_size, dtype=like.dtype, device=like.device)
        return SLSTMState(zeros, zeros.clone())

    def _check_state(self, state, batch: int, like: Tensor) -> SLSTMState:
        if state is None:
            return self.initial_state(batch, like)
        if not isinstance(state, tuple) or len(state) != 2:
            raise ValueError(f"state must be an SLSTMState(h, c) (or None), got {type(state).__name__}")
        state = SLSTMState(*state)
        for name, t in zip(("h", "c"), state):
            if not isinstance(t, Tensor) or tuple(t.shape) != (batch, self.hidden_size):
                got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"state.{name} must have shape ({batch}, {self.hidden_size}), got {got}")
        return state

    def forward(self, x: Tensor, state: SLSTMState | None = None, return_voltage: bool = False):
        x = prepare_input(x, self.input_size, self.weight_ih.dtype, 3, self.batch_first)
        if self.batch_first:
            x = x.transpose(0, 1)
        state = self._check_state(state, x.shape[1], x)
        wx = torch.nn.functional.linear(x, self.weight_ih, self.bias)
        learnable = any(isinstance(t, nn.Parameter) for t in (self.spike_fn.dampening, self.spike_fn.sharpness))
        run = run_slstm if learnable else run_slstm_fused
        h, c, state = run(wx, self.weight_hh, state, self.spike_fn)
        if self.batch_first:
            h, c = h.transpose(0, 1), c.transpose(0, 1)
        return (h, c, state) if return_voltage else (h, state)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, gates=f,i,o,candidate, batch_first={self.batch_first}"
