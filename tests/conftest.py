import pytest
import torch


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
