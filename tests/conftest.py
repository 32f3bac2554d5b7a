import importlib.util
import os

import pytest
import torch

# the peer libraries whose tests (adapters, SG converters, NIR) must run, not skip: `make install` puts them in
# the test environment; SPIKESTAB_ALLOW_MISSING_PEERS=1 lets a partial environment run the rest
PEERS = ("snntorch", "norse", "spikingjelly", "nir", "nirtorch")


def pytest_configure(config):
    missing = [p for p in PEERS if importlib.util.find_spec(p) is None]
    if missing and os.environ.get("SPIKESTAB_ALLOW_MISSING_PEERS") != "1":
        raise pytest.UsageError(
            f"peer libraries missing from the test environment: {missing}; install them with "
            "`make install` (or set SPIKESTAB_ALLOW_MISSING_PEERS=1 to skip their tests)"
        )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    yield


@pytest.fixture
def one_thread():
    """One torch thread (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny tensors and long loops
    of small per-step products, where a second thread only adds OpenMP waits on a shared CPU (seconds instead
    of milliseconds). ``_seed`` sets two threads again before the next test."""
    torch.set_num_threads(1)
