"""``fast_init``: the faster ``__init__`` behaves as the dataclass's own (tracker.domain.frozen)."""

from __future__ import annotations

import dataclasses
import pickle
from decimal import Decimal

import msgspec
import pytest

from tracker.domain import events, rows
from tracker.domain.frozen import fast_init
from tracker.domain.log import NewEntry


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class Point:
    x: int
    y: Decimal
    label: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class PlainPoint:
    x: int
    y: Decimal
    label: str | None = None


def test_same_as_the_generated_init() -> None:
    for args, kwargs in [((1, Decimal("2.50")), {}), ((1,), {"y": Decimal(0), "label": "a"}), ((), {"x": 3, "y": 4})]:
        fast, plain = Point(*args, **kwargs), PlainPoint(*args, **kwargs)  # type: ignore[arg-type]
        assert dataclasses.astuple(fast) == dataclasses.astuple(plain)
        assert repr(fast) == repr(plain).replace("PlainPoint", "Point")
    with pytest.raises(TypeError):
        Point(1)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, Decimal(2), "a", "extra")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Point(1, Decimal(2), nope=1)  # type: ignore[call-arg]


def test_still_a_frozen_dataclass() -> None:
    point = Point(1, Decimal("2.5"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        point.x = 2  # type: ignore[misc]
    assert dataclasses.replace(point, label="b") == Point(1, Decimal("2.5"), "b")
    assert point == Point(1, Decimal("2.5")) and hash(point) == hash(Point(1, Decimal("2.5")))
    assert pickle.loads(pickle.dumps(point)) == point
    match point:
        case Point(x, y):
            assert (x, y) == (1, Decimal("2.5"))


def test_refuses_what_it_cannot_do() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    with pytest.raises(TypeError):
        fast_init(Mutable)

    @dataclasses.dataclass(frozen=True, slots=True)
    class WithFactory:
        x: list[int] = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError):
        fast_init(WithFactory)


def test_the_log_entry_types_have_it() -> None:
    types = [NewEntry]
    for cls in types:
        names = cls.__init__.__code__.co_names  # the generated one calls object.__setattr__ instead
        assert "_twin" in names and "__dataclass_builtins_object__" not in names, cls  # the twin, not the fallback
        instance = cls(*[None] * len(dataclasses.fields(cls)))
        assert type(instance) is cls  # back from the twin before __init__ returns
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(instance, dataclasses.fields(cls)[0].name, 1)


def test_rows_and_events_are_frozen_structs() -> None:
    """The projected rows and the domain events are msgspec structs (cheaper to make than these dataclasses,
    docs/storage.md "Rebuild, fifth round"): frozen, and outside the cyclic collector (no cycle can go through one)."""
    for cls in [*rows.TABLES.values(), *events.DomainEvent.__args__]:  # type: ignore[attr-defined]
        assert issubclass(cls, msgspec.Struct), cls
        assert cls.__struct_config__.frozen and not cls.__struct_config__.gc, cls
        instance = cls(*[None] * len(cls.__struct_fields__))
        with pytest.raises(AttributeError):
            setattr(instance, cls.__struct_fields__[0], 1)


@fast_init
@dataclasses.dataclass(frozen=True, slots=True)
class Labelled(Point):  # not directly on object: no twin, each slot through its descriptor
    note: str | None = None


def test_without_a_twin_it_sets_each_slot() -> None:
    assert "_twin" not in Labelled.__init__.__code__.co_names
    labelled = Labelled(1, Decimal("2"), "a", "b")
    assert (labelled.x, labelled.y, labelled.label, labelled.note) == (1, Decimal("2"), "a", "b")
    assert type(labelled) is Labelled
    with pytest.raises(dataclasses.FrozenInstanceError):
        labelled.note = "c"  # type: ignore[misc]
