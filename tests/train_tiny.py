"""The flags of the tiny Randman run the command-line tests share (3 classes of 12 units over 20 steps, a
2x16 network, batch 16, one thread, no progress bar): a run of a second or two. Each test adds its own."""


def tiny_train(*extra: str, samples_per_class: int = 30) -> list[str]:
    """``spikestab train`` flags of the tiny run, followed by ``extra``."""
    task = ["n_classes=3", "n_units=12", "n_steps=20", f"samples_per_class={samples_per_class}"]
    options = [flag for option in task for flag in ("--task-option", option)]
    return ["--task", "randman", *options, "--layers", "2x16", "--batch-size", "16", "--no-progress",
            "--threads", "1", *extra]  # fmt: skip
