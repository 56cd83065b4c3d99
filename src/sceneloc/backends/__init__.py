"""Backends, one module each, imported on first use by :mod:`sceneloc.registry`.

A new backend is one new module here, decorated with
:func:`sceneloc.registry.register_backend`, and its name added below.
"""

BACKEND_MODULES = (
    "grounding_dino",
    "owlv2",
    "florence2",
    "clip_rerank",
    "omdet_turbo",
    "native",
    "native_describer",
    "alignment",
    "sam3",
    "qwen_vl",
    "propose_choose",
    "kosmos2",
)
