"""Grounding datasets: one JSON Lines sample format, converters into it, synthetic scenes."""

from sceneloc.data.coco import convert_coco
from sceneloc.data.convert import ConversionStats
from sceneloc.data.flickr30k import convert_flickr30k_entities
from sceneloc.data.format import Sample, read_samples, write_samples
from sceneloc.data.grefcoco import convert_grefcoco
from sceneloc.data.odvg import convert_odvg
from sceneloc.data.refcoco import convert_refcoco
from sceneloc.data.scenes import ObjectRecord, SceneRecord, Scenes, read_scenes, scenes_beside
from sceneloc.data.visual_genome import convert_visual_genome

__all__ = [
    "ConversionStats",
    "ObjectRecord",
    "Sample",
    "SceneRecord",
    "Scenes",
    "convert_coco",
    "convert_flickr30k_entities",
    "convert_grefcoco",
    "convert_odvg",
    "convert_refcoco",
    "convert_visual_genome",
    "read_samples",
    "read_scenes",
    "scenes_beside",
    "write_samples",
]
