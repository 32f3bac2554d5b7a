"""Tiny randman runs for the sweep tests (each trial well under a second or two on one thread)."""

TASK_OPTIONS = {"n_classes": 3, "n_units": 20, "n_steps": 30, "samples_per_class": 60}
# conditions: none, explicitly, whatever the default becomes (the tests rely on plain initialisation)
FIXED = {
    "task": "randman",
    "task_options": TASK_OPTIONS,
    "layers": [32],
    "epochs": 3,
    "batch_size": 16,
    "lr": 1e-2,
    "dropout": 0.0,
    "threads": 1,
    "conditions": "none",
}


def cli_args(**over) -> list[str]:
    """``FIXED`` (with overrides) as ``spikestab train`` flags."""
    cfg = {**FIXED, **over}
    args = []
    for key, value in cfg["task_options"].items():
        args += ["--task-option", f"{key}={value}"]
    for key, value in cfg.items():
        if key == "task_options":
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args
