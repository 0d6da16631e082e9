"""Control-flow primitives: `guard`, recorded when traced code branches on a traced value."""
from .core import Primitive


def _guard_statement(texts, params):
    test = texts[0] if not params["expected"] else f"not {texts[0]}"
    return f"if {test}:\n        raise GuardFailed({params['id']})"


def build():
    """The control-flow records (called once by the registry)."""
    return [Primitive("guard", None, lambda cond, expected, id: ("bool", ()),
                      statement=_guard_statement, nondifferentiable=True, effect=True,
                      domain=((-1.0, 1.0),))]
