"""Task datasets in their real file formats (SHD h5, MNIST idx, PTB text) and procedural Randman.

``load_task(name, data_dir)`` gives a ``Task`` with train/val/test splits; ``make_loader`` batches spike
datasets time-first, ``lm_batches`` cuts token streams into stateful windows.
"""

from .loader import SpikeDataset, SpikeLoader, lm_batches, make_loader, sparse_batches_pay
from .tasks import TASKS, Task, default_data_dir, load_task, task_options

__all__ = [
    "load_task",
    "Task",
    "TASKS",
    "task_options",
    "default_data_dir",
    "SpikeDataset",
    "SpikeLoader",
    "make_loader",
    "sparse_batches_pay",
    "lm_batches",
]
