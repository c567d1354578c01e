"""Fixtures shared by the fake exchange's socket tests (each module opens its own seeded ``fx``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fake_helpers import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c
