"""Progress display: a tqdm bar on a terminal, one plain line per epoch elsewhere (no carriage returns)."""

import io

from spikestab.train.progress import Progress, format_duration


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_stream_gets_one_line_per_epoch_without_carriage_returns():
    out = io.StringIO()
    bar = Progress(5, "epoch 1/2", stream=out)
    for _ in range(5):
        bar.update(1, loss=0.25)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert text.startswith("epoch 1/2 5/5 batches in 00:00") and "loss=0.25" in text


def test_terminal_gets_a_live_bar_and_disabled_prints_nothing():
    term = _Terminal()
    bar = Progress(3, "epoch 1/1", stream=term, start=1)
    bar.update(2, loss=1.5)
    bar.close()
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()
    quiet = io.StringIO()
    off = Progress(3, stream=quiet, enabled=False)
    off.update(3)
    off.close()
    assert quiet.getvalue() == ""


def test_format_duration():
    assert format_duration(59.9) == "00:59" and format_duration(3725) == "1:02:05" and format_duration(-3) == "00:00"
