"""What the worker reports at /debug/sizes: items per in-memory container, found through its own objects."""

from __future__ import annotations

from collections import deque

import pytest
from werkzeug.test import Client

from controlplane.metrics import worker_http_app
from controlplane.runtime import sizes
from controlplane.runtime.sizes import container_sizes
from tests.fakes import make_settings


class Window:  # stands for one of regionguard's own classes (its module is this test's, under tests/)
    def __init__(self) -> None:
        self.samples: deque[int] = deque([1, 2, 3])
        self.flaps: deque[int] = deque([1], maxlen=64)


class Holder:
    __slots__ = ("seen", "settings", "windows")

    def __init__(self) -> None:
        self.windows = {"a": Window(), "b": Window()}
        self.seen: set[int] = {1, 2}
        self.settings = make_settings()  # configuration: not entered


def test_it_counts_each_container_and_sums_the_same_path_over_elements(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sizes, "OUR_PACKAGES", (*sizes.OUR_PACKAGES, "tests"))
    assert container_sizes(Holder(), "root") == {
        "root.seen": 2,
        "root.windows": 2,
        "root.windows[*].flaps": 2,
        "root.windows[*].flaps@bound": 128,
        "root.windows[*].samples": 6,
    }


def test_the_worker_serves_them_as_json() -> None:
    app = worker_http_app(lambda: {"database": True}, None, lambda: {"worker.reconciler._mine": 3})
    response = Client(app).get("/debug/sizes")
    assert response.status_code == 200
    assert response.get_json() == {"sizes": {"worker.reconciler._mine": 3}}


@pytest.mark.skipif(not sizes.allocator_sizes(), reason="C library without mallinfo2 (not glibc >= 2.33)")
def test_it_reports_what_the_c_allocator_holds_in_use_and_free() -> None:
    before = sizes.allocator_sizes()
    block = bytearray(64 << 20)  # over the mmap threshold: malloc maps it, in use until freed
    during = sizes.allocator_sizes()
    del block
    after = sizes.allocator_sizes()
    assert set(before) == {"malloc.in_use_kb", "malloc.free_kb", "malloc.mapped_kb"}
    assert during["malloc.in_use_kb"] - before["malloc.in_use_kb"] >= 64 << 10
    assert during["malloc.mapped_kb"] - before["malloc.mapped_kb"] >= 64 << 10
    assert after["malloc.in_use_kb"] - before["malloc.in_use_kb"] < 8 << 10
