"""Progress bars for the streaming commands: drawn on a terminal only, and erased when the work fails.

An export or diff that fails part-way (a bake that produced NaN, a full disk) must leave the one-line error
as the only thing on stderr, so the bar is erased before the error is printed; a pipe or log file gets no
bar at all (it would be a line of carriage returns there).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from tqdm.auto import tqdm

Item = TypeVar("Item")


@contextmanager
def progress(items: Iterable[Item], *, show: bool = True, **kwargs) -> Iterator[Iterable[Item]]:
    bar = tqdm(items, disable=None if show else True, **kwargs)  # None: drawn only when stderr is a terminal
    try:
        yield bar
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()


@contextmanager
def byte_progress(total: int, *, show: bool = True, desc: str) -> Iterator[tqdm]:
    """A bar counting bytes, for work that several threads advance; the same terminal-only and erase rules."""
    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=None if show else True)
    try:
        yield bar
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()
