"""Initialisation helpers: firing-rate calibration of the internal current (bias)."""

from .rate import calibrate_firing_rate, train_bias_for_rate

__all__ = ["calibrate_firing_rate", "train_bias_for_rate"]
