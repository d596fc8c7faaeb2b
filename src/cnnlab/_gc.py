"""The cyclic garbage collector, paused while large libraries import."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic collections inside the block; the collector's previous state after it.

    Importing torch creates some 400,000 long-lived objects and torch._dynamo ~150,000 more; the collector would
    walk them several times during the import (0.25 s of CPU for torch) to find almost no garbage.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
