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
def _erased_on_failure(bar: tqdm) -> Iterator[tqdm]:
    try:
        yield bar
    except BaseException:
        bar.leave = False
        raise
    finally:
        bar.close()


@contextmanager
def progress(items: Iterable[Item], *, show: bool = True, **kwargs) -> Iterator[Iterable[Item]]:
    # disable=None: drawn only when stderr is a terminal
    with _erased_on_failure(tqdm(items, disable=None if show else True, **kwargs)) as bar:
        yield bar


@contextmanager
def byte_progress(total: int, *, show: bool = True, desc: str) -> Iterator[tqdm]:
    """A bar counting bytes, for work that several threads advance; the same terminal-only and erase rules."""
    bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, disable=None if show else True)
    with _erased_on_failure(bar):
        yield bar
