"""NIR (Neuromorphic Intermediate Representation) export and import: ``export_nir``, ``import_nir``.

Needs the optional ``nir`` package (``pip install 'spikestab[nir]'``); importing this module does not,
only calling its functions does. The mapping (dt, tau, r, resets, the ALIF subgraph, metadata) is in
docs/nir.md and ``spikestab.nir.mapping``; ``SNNTORCH_DT`` and ``NORSE_DT`` are the steps of the graphs those
libraries write (``import_nir(source=...)`` uses them).
"""

from __future__ import annotations

from types import ModuleType

from .export import export_nir
from .load import import_nir
from .mapping import NORSE_DT, SNNTORCH_DT

__all__ = ["export_nir", "import_nir", "require_nir", "SNNTORCH_DT", "NORSE_DT"]


def require_nir() -> ModuleType:
    """The ``nir`` package, or ImportError naming the extra that installs it."""
    try:
        import nir
    except ImportError as err:
        raise ImportError(
            "spikestab.nir needs the optional dependency 'nir' (Neuromorphic Intermediate "
            "Representation): pip install 'spikestab[nir]'"
        ) from err
    return nir
