"""``fast_init``: a cheaper ``__init__`` for frozen slotted dataclasses (the rows and events the rebuild makes by the
million).

A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__(self, name, value)`` (a global
lookup, an attribute lookup and a name lookup in the type per field): about 6 µs for a 19-field row on CPython 3.11,
ten times a plain class. ``fast_init`` replaces it with one of the same signature that calls each slot's own
descriptor setter, bound once: about 1.3 µs. Nothing else changes: the class stays a frozen dataclass (assignment
raises ``FrozenInstanceError``; ``fields``, ``replace``, ``__eq__``, ``__hash__``, ``__repr__``, ``__match_args__``
are the generated ones).
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Class decorator, above ``@dataclass(frozen=True, slots=True)``: install the faster ``__init__``."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__, which fast_init does not call")
    namespace: dict[str, Any] = {}
    arguments: list[str] = []
    body: list[str] = []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: fast_init supports plain positional fields only")
        name = field.name
        if field.default is dataclasses.MISSING:
            arguments.append(name)
        else:
            namespace[f"_default_{name}"] = field.default
            arguments.append(f"{name}=_default_{name}")
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        body.append(f"    _set_{name}(self, {name})")
    source = f"def __init__(self, {', '.join(arguments)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # generated from the field names, as dataclasses makes its own __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]  # the point of the decorator
    return cls
