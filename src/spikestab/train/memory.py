"""An estimate of the memory a network needs, checked before it is built: a ``--layers`` spec far beyond
the machine (``100000x1``, ``2x1000000``) is refused with the number, instead of minutes of set-up that
end in swapping or the OOM killer.

The estimate is deliberately rough (within a factor of about two) and errs high: per layer a fixed cost
(``LAYER_BYTES``: the module, its parameter and buffer objects and their autograd records; 2,000 LIF
layers of width 1 took 57 KiB each after one forward pass), the parameters four times (weights,
gradients, AdamW's two moments) and the activations BPTT keeps (``SAVED`` float32 values per neuron,
step and sample).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["available_memory", "check_fits", "estimate_bytes", "layers_text"]

LAYER_BYTES = 64 * 1024
SAVED = 8  # per neuron, step and sample: input current, voltage, spikes, SG inputs, masks, their gradients
FLOAT = 4


def layers_text(widths: Sequence[int]) -> str:
    """Widths as ``--layers`` writes them: ``(256, 256)`` -> "2x256", ``(256, 128)`` -> "256,128"."""
    if len(set(widths)) == 1:
        return f"{len(widths)}x{widths[0]}"
    return ",".join(map(str, widths))


def estimate_bytes(inputs: int, widths: Sequence[int], outputs: int, steps: int, batch: int) -> int:
    """Bytes to train a stack of ``widths`` (recurrent, ``inputs`` -> ... -> ``outputs``) on batches of
    ``batch`` samples of ``steps`` steps (``LAYER_BYTES``, ``SAVED``: see the module's docstring)."""
    sizes = [inputs, *widths]
    params = sum(n_in * w + w * w + 8 * w for n_in, w in zip(sizes, widths)) + widths[-1] * outputs
    return len(widths) * LAYER_BYTES + 4 * FLOAT * params + SAVED * FLOAT * steps * batch * sum(widths)


def available_memory() -> int | None:
    """Bytes this process may still use: the system's available memory (``MemAvailable``), less a control
    group's remaining limit where that is smaller; None where neither can be read."""
    found = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        if limit.isdigit() and used.isdigit():
            found.append(int(limit) - int(used))
    except OSError:
        pass
    if not found and hasattr(os, "sysconf"):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError):
            pass
    return min(found) if found else None


def check_fits(inputs: int, widths: Sequence[int], outputs: int, steps: int, batch: int, what: str) -> None:
    """ValueError, with the estimate, when the network of ``widths`` would need more memory than is
    available (``what``: how the layers were given, e.g. "--layers 100000x1")."""
    need, have = estimate_bytes(inputs, widths, outputs, steps, batch), available_memory()
    if have is None or need <= have:
        return
    raise ValueError(
        f"{what} needs about {need / 2**30:.1f} GiB ({len(widths)} layers, {sum(widths)} neurons, "
        f"{inputs} inputs, batches of {batch} x {steps} steps), more than the {max(have, 0) / 2**30:.1f} GiB "
        "of memory available: use fewer or narrower layers, or a smaller batch"
    )
