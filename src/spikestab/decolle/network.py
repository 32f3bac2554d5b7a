"""DECOLLE networks: a stack of :class:`DecolleLayer` run step by step, each layer fed the detached output
of the one below, so that no gradient crosses layers (and, with the state detached, none crosses steps)."""

from __future__ import annotations

from torch import Tensor, nn

from .layers import DecolleLayer, DecolleState

__all__ = ["DecolleNet", "conv_decolle", "dense_decolle"]


class DecolleNet(nn.Module):
    """Layers applied in order, one time step per :meth:`step`; ``readouts`` of every layer are the local
    predictions (the last layer's is the network's)."""

    def __init__(self, layers: list[DecolleLayer]) -> None:
        super().__init__()
        if not layers:
            raise ValueError("layers must hold at least one DecolleLayer")
        self.layers = nn.ModuleList(layers)
        self.n_classes = layers[0].readout.out_features

    def init_state(self, x: Tensor) -> list[DecolleState]:
        """Zero states for a batch whose first step is ``x`` [B, ...] (runs the shapes through once)."""
        states, h = [], x
        for layer in self.layers:
            if not isinstance(layer, DecolleLayer):
                raise TypeError(f"DecolleNet.layers must hold DecolleLayer modules, found {type(layer).__name__}")
            st = layer.init_state(h)
            states.append(st)
            h = layer.pool(st.s)
        return states

    def step(self, x: Tensor, states: list[DecolleState]):
        """-> (spikes per layer (pooled), readouts per layer, membranes per layer, new states)."""
        spikes, readouts, volts, new = [], [], [], []
        h = x
        for layer, st in zip(self.layers, states):
            s, y, u, st = layer(h.detach(), st)
            spikes.append(s)
            readouts.append(y)
            volts.append(u)
            new.append(st)
            h = s
        return spikes, readouts, volts, new


def dense_decolle(input_size: int, hidden: tuple[int, ...], n_classes: int, **layer_kw) -> DecolleNet:
    """Fully connected DECOLLE network, inputs [B, input_size] per step."""
    layers, width = [], input_size
    for h in hidden:
        layers.append(DecolleLayer(nn.Linear(width, h), (h,), n_classes, **layer_kw))
        width = h
    return DecolleNet(layers)


def conv_decolle(
    in_shape: tuple[int, int, int],
    channels: tuple[int, ...],
    n_classes: int,
    kernel: int = 7,
    pooling: tuple[int, ...] | None = None,
    **layer_kw,
) -> DecolleNet:
    """Convolutional DECOLLE network (DECOLLE's LeNet-like stack: 'same' padding, max pooling per layer),
    inputs [B, C, H, W] per step."""
    pooling = tuple(pooling) if pooling is not None else (1,) * len(channels)
    if len(pooling) != len(channels):
        raise ValueError(f"pooling must give one factor per layer ({len(channels)}), got {pooling!r}")
    c, hgt, wid = in_shape
    layers = []
    for ch, pool in zip(channels, pooling):
        conv = nn.Conv2d(c, ch, kernel, padding=kernel // 2)
        hgt, wid = hgt // pool, wid // pool
        if hgt < 1 or wid < 1:
            raise ValueError(f"pooling {pooling!r} shrinks the {in_shape[1]}x{in_shape[2]} input below one pixel")
        layers.append(DecolleLayer(conv, (ch, hgt, wid), n_classes, pool=pool, **layer_kw))
        c = ch
    return DecolleNet(layers)
