"""How every stage ends: a clear one-paragraph error instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable


class PipelineError(Exception):
    """A problem the user can fix (bad params, bad input data); printed without a traceback."""


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
