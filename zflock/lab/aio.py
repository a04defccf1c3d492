"""Run zflock.zfs coroutines from the lab's synchronous code."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion, also when the caller is inside an event loop.

    The lab API is synchronous (it is called from the CLI and from pytest
    fixtures, some of them inside pytest-asyncio's loop); asyncio.run cannot
    nest, so inside a running loop the coroutine gets its own loop in a thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()
