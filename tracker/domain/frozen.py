"""``fast_init``: a cheaper ``__init__`` for frozen slotted dataclasses (the log entries ingest makes for every frame;
the events and rows the rebuild makes by the million are msgspec structs instead, see ``domain/rows.py``).

A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__(self, name, value)`` (a global
lookup, an attribute lookup and a name lookup in the type per field): about 6 µs for a 19-field row on CPython 3.11,
ten times a plain class. ``fast_init`` replaces it with one of the same signature that, for the time of the call,
gives the instance a *twin* class: the same slots in the same order on the same base, and not frozen. Python allows
moving an instance between two such classes (``__class__`` assignment checks the layouts are the same), and on the
twin each field is a plain attribute store, which CPython 3.11 specialises for slots: a 24-field ``OrderRow`` 2.26 ->
1.10 µs against the previous way (each slot's descriptor setter, bound once), which this falls back to where the
twin cannot be used. Nothing else changes: the class stays a frozen dataclass (assignment raises
``FrozenInstanceError``; ``fields``, ``replace``, ``__eq__``, ``__hash__``, ``__repr__``, ``__match_args__`` are the
generated ones), and no instance is ever seen with the twin's class (the ``__init__`` sets it back before it returns,
and a field store cannot fail).
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
    twin = _twin(cls)
    namespace: dict[str, Any] = {"_cls": cls, "_twin": twin, "_setattr": object.__setattr__}
    arguments: list[str] = []
    body: list[str] = ['    _setattr(self, "__class__", _twin)'] if twin is not None else []
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{field.name}: fast_init supports plain positional fields only")
        name = field.name
        if field.default is dataclasses.MISSING:
            arguments.append(name)
        else:
            namespace[f"_default_{name}"] = field.default
            arguments.append(f"{name}=_default_{name}")
        if twin is not None:
            body.append(f"    self.{name} = {name}")
        else:
            slot = next(klass.__dict__[name] for klass in cls.__mro__ if name in klass.__dict__)  # a base's, too
            namespace[f"_set_{name}"] = slot.__set__
            body.append(f"    _set_{name}(self, {name})")
    if twin is not None:
        body.append("    self.__class__ = _cls")
    source = f"def __init__(self, {', '.join(arguments)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # generated from the field names, as dataclasses makes its own __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]  # the point of the decorator
    return cls


def _twin(cls: type) -> type | None:
    """A class an instance of ``cls`` may be moved to and back (same base, same slots in the same order), not frozen;
    None where Python refuses the move (then ``fast_init`` sets each slot through its descriptor)."""
    if cls.__bases__ != (object,):
        return None
    twin = type(f"{cls.__name__}Init", (), {"__slots__": cls.__dict__["__slots__"], "__module__": cls.__module__})
    probe: object = object.__new__(cls)
    try:
        object.__setattr__(probe, "__class__", twin)
        probe.__class__ = cls
    except TypeError:
        return None
    return twin
