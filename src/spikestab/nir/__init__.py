"""NIR (Neuromorphic Intermediate Representation) export and import: ``export_nir``, ``import_nir``.

Needs the optional ``nir`` package (``pip install 'spikestab[nir]'``); importing this module does not,
only calling its functions does. The mapping (dt, tau, r, resets, the ALIF subgraph, metadata) is in
docs/nir.md and ``spikestab.nir.mapping``.
"""

from __future__ import annotations

from types import ModuleType

from .export import export_nir
from .load import import_nir

__all__ = ["export_nir", "import_nir", "require_nir"]


def require_nir() -> ModuleType:
    """The ``nir`` package, or ImportError naming the extra that installs it."""
    try:
        import nir
    except ImportError as err:
        raise ImportError("spikestab.nir needs the optional dependency 'nir' (Neuromorphic Intermediate "
                          "Representation): pip install 'spikestab[nir]'") from err
    return nir
