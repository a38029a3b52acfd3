"""A fixed number of threads for decoding uploads, shared by every request of a service.

Decoding is where a small upload becomes large arrays (a 100 KB PNG can need 160 MB while
it is decoded), so the number of decodes running at once, not the number of requests, is
what bounds a media service's memory. Requests past that number wait their turn.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from services.core.errors import RequestTimedOut

ResultT = TypeVar("ResultT")


class DecodeWorkers:
    """Runs decodes off the event loop, at most `count` at a time across all requests."""

    def __init__(self, count: int, *, wait_seconds: float, setting: str) -> None:
        """`wait_seconds` bounds how long a request waits for its decodes to finish, queue
        included; `setting` names the variable that sets `count`, for error messages."""
        self.count = count
        self.wait_seconds = wait_seconds
        self.setting = setting
        # Threads, not a semaphore around `asyncio.to_thread`: a decode whose client went
        # away keeps its thread until it ends, so the bound holds even then.
        self._threads = ThreadPoolExecutor(max_workers=count, thread_name_prefix="mtc-decode")

    def deadline(self) -> float:
        """When a request starting its decodes now must have them done (event-loop time)."""
        return asyncio.get_running_loop().time() + self.wait_seconds

    async def run(self, decode: Callable[[], ResultT], *, deadline: float) -> ResultT:
        """The result of `decode()`, run in one of the decode threads.

        Raises `RequestTimedOut` (504) when it has not finished by `deadline` (from
        `deadline()`, shared by the decodes of one request); if it had not started, it never
        will. A cancelled caller withdraws a decode not yet started.
        """
        future = self._threads.submit(decode)
        timeout = asyncio.timeout_at(deadline)
        try:
            async with timeout:
                return await asyncio.wrap_future(future)
        except TimeoutError:
            if not timeout.expired():
                raise
            future.cancel()
            raise RequestTimedOut(
                f"decoding did not finish within {self.wait_seconds:g} s "
                f"(MTC_REQUEST_TIMEOUT_SECONDS); at most {self.count} uploads are decoded at "
                f"once ({self.setting})"
            ) from None

    async def run_each(self, decodes: Iterable[Callable[[], ResultT]]) -> list[ResultT]:
        """The results of one request's decodes, in order, run one at a time (the threads
        are shared by all requests) under one `deadline()`."""
        deadline = self.deadline()
        return [await self.run(decode, deadline=deadline) for decode in decodes]
