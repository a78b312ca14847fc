"""``livechat serve`` tunes Python's cyclic GC once start-up is done (``gc_gen0_threshold``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from web.server import tune_gc
from web.settings import load_settings


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_start_up_objects_are_frozen_and_young_collections_are_rarer(restore_gc: None) -> None:
    settings = load_settings({"gc_gen0_threshold": 50_000}, environ={})
    tune_gc(settings)
    assert gc.get_threshold() == (50_000, 20, 100)
    assert gc.get_freeze_count() > 0


def test_zero_leaves_the_gc_as_python_sets_it(restore_gc: None) -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    tune_gc(load_settings({}, environ={"LIVECHAT_GC_GEN0_THRESHOLD": "0"}))
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


def test_the_default_threshold_is_raised() -> None:
    assert load_settings({}, environ={}).server.gc_gen0_threshold == 50_000
