"""How every stage ends (a clear one-paragraph error instead of a traceback), and progress bars."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
QUIET_ENV = "LEAF_QUIET"


class PipelineError(Exception):
    """A problem the user can fix (bad params, bad input data); printed without a traceback."""


MAX_PROBLEMS_SHOWN = 10


def format_problems(problems: list[str], limit: int = MAX_PROBLEMS_SHOWN) -> str:
    """The first `limit` problems as an indented list, then how many more there are."""
    lines = [f"  - {problem}" for problem in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def run(main: Callable[[list[str] | None], object]) -> None:
    """Run a stage's `main()`; turn PipelineError into `error: ...` on stderr and exit code 2."""
    try:
        main(None)
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def quiet() -> bool:
    """Whether progress bars are off: `LEAF_QUIET=1`, or `CI` set and stderr not a terminal.

    `LEAF_QUIET=0` turns them back on, in CI too.
    """
    setting = os.environ.get(QUIET_ENV, "").strip().lower()
    if setting:
        return setting not in ("0", "false", "no", "off")
    return bool(os.environ.get("CI")) and not sys.stderr.isatty()


def progress(iterable: Iterable[T], **kwargs) -> tqdm:
    """Wrap `iterable` in a tqdm progress bar (rate and ETA on stderr) unless `quiet()`.

    Args:
        iterable: what to iterate over; pass `total=` for iterables without a length.
        **kwargs: passed to `tqdm` (`desc`, `unit`, `total`, `leave`, ...). An explicit
            `disable=True` keeps the bar off even when not quiet.

    Returns:
        The tqdm wrapper; it yields the same items, so `.set_postfix()` works when shown.
    """
    kwargs["disable"] = quiet() or kwargs.get("disable", False)
    return tqdm(iterable, **kwargs)
