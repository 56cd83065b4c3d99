"""Grounding datasets: one JSON Lines sample format, converters into it, synthetic scenes."""

from sceneloc.data.coco import convert_coco
from sceneloc.data.convert import ConversionStats
from sceneloc.data.flickr30k import convert_flickr30k_entities
from sceneloc.data.format import Sample, read_samples, write_samples
from sceneloc.data.odvg import convert_odvg
from sceneloc.data.refcoco import convert_refcoco

__all__ = [
    "ConversionStats",
    "Sample",
    "convert_coco",
    "convert_flickr30k_entities",
    "convert_odvg",
    "convert_refcoco",
    "read_samples",
    "write_samples",
]
