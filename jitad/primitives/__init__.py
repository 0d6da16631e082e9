"""The primitive registry: the one place every primitive is collected.

Families define their records as data; `REGISTRY` maps each printed name to its
record. The set of traceable operations *is* this registry.
"""
from . import control, custom, elementwise, linalg, numeric, reductions, shape, update
from ..wengert import Builder
from .core import Primitive

REGISTRY: dict = {}
for _family in (elementwise, reductions, shape, linalg, control, numeric, update, custom):
    for _prim in _family.build():
        assert _prim.name not in REGISTRY, f"primitive {_prim.name} is defined twice"
        REGISTRY[_prim.name] = _prim
Builder.add_shorthands(REGISTRY)       # `b.sin(x)` in rules

__all__ = ["REGISTRY", "Primitive"]
