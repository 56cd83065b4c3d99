"""Grounding datasets: one JSON Lines sample format, converters into it, synthetic scenes."""

from sceneloc.data.format import Sample, read_samples, write_samples

__all__ = ["Sample", "read_samples", "write_samples"]
