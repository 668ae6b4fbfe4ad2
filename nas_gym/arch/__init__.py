"""Architecture values and search spaces (the bottom layer: imports nothing above it)."""

# each space module registers its architecture kind(s) on import
from . import bench_macro, cell, epnas, macro, plain  # noqa: F401
from .base import (
    ARCHITECTURES,
    Architecture,
    architecture_from_dict,
    canonical_json,
    register_architecture,
    sha256_of,
)

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "architecture_from_dict",
    "canonical_json",
    "register_architecture",
    "sha256_of",
]
