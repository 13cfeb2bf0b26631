"""Memory settings for a long-running collector process: the garbage collector's, and how
many malloc arenas glibc keeps.

A request allocates hundreds of short-lived containers (the parsed body, redacted copies,
rows, futures). With CPython's default young-generation threshold of 700 that starts a
collection every request or two, and every hundred of those the older generations are
walked too: every object start-up built (modules, the registry cache, enrichment tables)
is traversed again and again although none of it will ever be garbage. Freezing what
start-up built and collecting young objects less often measured +13 % single-event and
+5 % 20-event throughput, and the 20-event p99 fell from about 215 to 145 ms (the
collector benchmark, 2 workers, 3 interleaved rounds with and without these settings).
"""

from __future__ import annotations

import ctypes
import gc
import os

#: A young collection every 10,000 net allocations instead of 700; the middle generation
#: after 50 of those, the oldest after 1,000 of those. Reference cycles are rare on the hot
#: path (an exception's traceback), and young ones are still found at the next young
#: collection.
THRESHOLDS = (10_000, 50, 1_000)


def settle_after_startup() -> None:
    """Move everything alive after start-up out of the collector's sight, then raise the
    thresholds. Called once per process, at the end of the app's start-up."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


#: glibc's ``mallopt`` parameter for the most arenas it keeps.
_M_ARENA_MAX = -8
#: Arenas per process. glibc's default is eight per core, one more for each thread that
#: allocates while the others are busy (the event loop, the default executor, logging,
#: obstore's and asyncpg's I/O); memory freed into an arena stays there for its thread.
#: Two measured on the soak (``benchmarks.soak``, export inside serve, 400 requests/s): the
#: collector's peak fell from 214 to 184 MiB and its resident size after the load from 195
#: to 153 MiB; throughput and p99 were the same.
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """Keep at most ``MALLOC_ARENAS`` in this process and in those it starts (uvicorn's
    workers, the export's workers inherit ``MALLOC_ARENA_MAX``); an operator's own value of
    the variable wins (glibc ignores one that is not a positive number, and so does this).
    Called first thing, before threads exist. Nothing happens on a C library without
    ``mallopt`` (musl, macOS)."""
    arenas = os.environ.setdefault("MALLOC_ARENA_MAX", str(MALLOC_ARENAS))
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None and arenas.isdigit() and int(arenas) > 0:
        mallopt(_M_ARENA_MAX, int(arenas))
