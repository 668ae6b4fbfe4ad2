"""Model builders: one per search space, all reached through :func:`build_model`."""

# each builder module registers its kind(s) on import
from . import bench_macro, cell, epnas, macro, plain  # noqa: F401
from .builder import BUILDERS, build_model, he_init_, register_builder

__all__ = ["BUILDERS", "build_model", "he_init_", "register_builder"]
