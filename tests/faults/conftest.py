from __future__ import annotations

from collections.abc import Iterator

import pytest

from controlplane.store import Store
from simulator.arm import FakeArm
from tests.faults.private_pg import PrivatePostgres
from tests.faults.world import TOKEN, World


@pytest.fixture(scope="module")
def arm() -> Iterator[FakeArm]:
    with FakeArm(token=TOKEN) as fake:
        yield fake


@pytest.fixture
def world(arm: FakeArm, store: Store) -> Iterator[World]:
    arm.clear_faults()
    arm.before_write.clear()
    yield World(arm, store)
    arm.clear_faults()
    arm.before_write.clear()


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.destroy()
