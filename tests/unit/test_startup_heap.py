"""The servers exempt what start-up built from later full GC passes (bench/scale.py shows the pauses this saves)."""

from __future__ import annotations

import gc

from controlplane.cli.common import freeze_startup_heap


def test_what_start_up_built_is_left_out_of_every_later_collection() -> None:
    built = [[i, []] for i in range(1000)]  # long-lived (lists: always tracked by the GC): like the app, its settings and its store
    assert gc.get_freeze_count() == 0
    try:
        freeze_startup_heap()
        frozen = gc.get_freeze_count()
        assert frozen >= len(built)
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(o) in tracked for o in built)  # a full pass no longer walks them
        gc.collect()
        assert gc.get_freeze_count() == frozen  # and none of them is collected or walked
    finally:
        gc.unfreeze()
    assert id(built[0]) in {id(o) for o in gc.get_objects()}
