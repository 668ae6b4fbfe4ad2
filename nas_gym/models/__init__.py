"""Model builders: one per search space, all reached through :func:`build_model`."""

# each builder module registers its kind(s) on import
from . import bench_macro, cell, closed_form, epnas, macro, plain  # noqa: F401
from .builder import BUILDERS, build_model, he_init_, register_builder
from .closed_form import COST_FORMS, register_costs

__all__ = ["BUILDERS", "COST_FORMS", "build_model", "he_init_", "register_builder",
           "register_costs"]
