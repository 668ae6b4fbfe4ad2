"""One env per module; all registered in ``nas_gym/__init__.py``."""
