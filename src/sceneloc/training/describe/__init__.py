"""Training the native region describer (``sceneloc train --task describe``)."""

from sceneloc.training.describe.task import DescribeOptions, DescribeTask

__all__ = ["DescribeOptions", "DescribeTask"]
