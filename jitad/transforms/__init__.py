"""Transformations: Wengert list -> Wengert list (reverse mode, forward mode, simplification)."""
from .forward import jvp
from .reverse import value_and_grad
from .simplify import simplify

__all__ = ["jvp", "simplify", "value_and_grad"]
