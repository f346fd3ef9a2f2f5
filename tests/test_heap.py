"""mlma.heap.LongLivedHeap: what a live tick leaves in memory is frozen out of the garbage collector's scans,
and garbage that was frozen is still collected at the next full settle."""

from __future__ import annotations

import gc
import weakref

from mlma.heap import LongLivedHeap


class _Node:
    pass


def test_a_cycle_frozen_while_alive_is_collected_at_the_next_full_settle(monkeypatch):
    monkeypatch.setattr(LongLivedHeap, "_open", 0)
    heap = LongLivedHeap(full_every=2)
    try:
        assert heap.settle() == "full"
        node = _Node()
        node.me = node  # a reference cycle: only the cyclic collector frees it
        alive = weakref.ref(node)
        assert heap.settle() == "young"  # node is alive: frozen with the rest
        del node
        gc.collect()
        assert alive() is not None  # frozen garbage: the price of freezing, bounded by full_every
        assert heap.settle() == "full"
        assert alive() is None
    finally:
        heap.release()


def test_the_heap_is_thawed_only_when_the_last_user_releases_it(monkeypatch):
    monkeypatch.setattr(LongLivedHeap, "_open", 0)  # agents of other tests left open do not count here
    first, second = LongLivedHeap(), LongLivedHeap()
    try:
        first.settle()
        assert gc.get_freeze_count() > 0
        first.release()
        first.release()  # twice: still one user left
        assert gc.get_freeze_count() > 0
    finally:
        second.release()
    assert gc.get_freeze_count() == 0
