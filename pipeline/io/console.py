"""How every stage and tool ends (one `error:` paragraph, never a traceback); progress bars."""

from __future__ import annotations

import argparse
import atexit
import difflib
import os
import signal
import sys
from collections.abc import Callable, Iterable
from functools import partial
from typing import NoReturn, TypeVar

from tqdm import tqdm

from pipeline.config.params import ParamsError

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


def did_you_mean(name: str, choices: Iterable[str], n: int) -> str:
    """`did you mean a, b? ` for the (at most `n`) choices close to a misspelt `name`; else ''."""
    close = difflib.get_close_matches(name, list(choices), n=n)
    return f"did you mean {', '.join(close)}? " if close else ""


HANG_UP = getattr(signal, "SIGHUP", None)  # POSIX only
# The stops a stage ends on as on Ctrl-C, its cleanups run (a killed write's temporaries removed).
TERMINATIONS = (signal.SIGTERM, HANG_UP) if HANG_UP else (signal.SIGTERM,)


def _end_interrupted() -> NoReturn:
    """How a Ctrl-C ends a stage or tool, before `run` starts (`_interrupted`) and in it."""
    print("interrupted", file=sys.stderr)
    sys.exit(130)


def _interrupted(signum: int, frame: object) -> None:
    _end_interrupted()


def end_quietly_on_ctrl_c() -> None:
    """Until `run` starts, a Ctrl-C ends the process as `run` would: while a stage imports torch
    (a second or two), Python would print a KeyboardInterrupt traceback from inside it."""
    signal.signal(signal.SIGINT, _interrupted)


def _terminated(owner: int, signum: int, frame: object) -> None:
    if os.getpid() != owner:  # a forked child (a loader worker) ends silently, as it always did
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    print("hung up" if signum == HANG_UP else "terminated", file=sys.stderr)
    sys.exit(128 + signum)  # SystemExit unwinds main: its cleanups run, as on Ctrl-C


def _finished(signum: int, frame: object) -> None:
    stop = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    print(f"{stop} came after this command finished: its outputs are kept", file=sys.stderr)


def run(main: Callable[[list[str] | None], object]) -> None:
    """Run a stage's `main()`; turn a user's error into `error: ...` on stderr and exit code 2,
    Ctrl-C into `interrupted` (130), SIGTERM into `terminated` (143), a closed terminal's SIGHUP
    into `hung up` (129), and output to a closed pipe into a quiet exit (141).

    Once `main` has returned, its outputs are written: a stop during the second Python takes to
    exit is only reported, or ignored late in the exit, as it would fail the exit and DVC would
    throw the outputs away (a train cell would train again from scratch).
    """
    if signal.getsignal(signal.SIGINT) is _interrupted:  # KeyboardInterrupt again, for cleanups
        signal.signal(signal.SIGINT, signal.default_int_handler)
    stops = [stop for stop in TERMINATIONS if signal.getsignal(stop) is not signal.SIG_IGN]
    for stop in stops:  # one ignored stays ignored: `nohup dvc repro` outlives its terminal
        signal.signal(stop, partial(_terminated, os.getpid()))
    try:
        try:
            main(None)
            for stop in (signal.SIGINT, *stops):
                signal.signal(stop, _finished)
                # Python sets its handlers back to the default as it exits, after atexit: the
                # rest of the exit (most of the second) ignores a stop.
                atexit.register(signal.signal, stop, signal.SIG_IGN)
        finally:
            sys.stdout.flush()  # a closed pipe fails here, not in the interpreter's exit
    except (PipelineError, ParamsError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        _end_interrupted()
    except BrokenPipeError:  # the reader left (`leaf leaderboard | head -3`): stop as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
        sys.exit(141)


def warn(message: str) -> None:
    """A problem that does not stop the run: `warning: ...` on stderr, as `run` prints `error:`."""
    print(f"warning: {message}", file=sys.stderr)


def first_line(doc: str | None) -> str:
    """The first non-blank line of a docstring: a command's one-line description."""
    return next((line.strip() for line in (doc or "").splitlines() if line.strip()), "")


def command_parser(
    prog: str,
    doc: str | None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.ArgumentParser:
    """An argument parser named `prog`, described by `doc`'s first line, with `add_arguments`."""
    parser = argparse.ArgumentParser(prog=prog, description=first_line(doc))
    if add_arguments is not None:
        add_arguments(parser)
    return parser


def parse_stage_args(
    argv: list[str] | None,
    doc: str | None,
    prog: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """Parse a stage's command line before it reads params or files.

    `--help` prints the usage (`prog`, `doc`'s first line) and exits 0; an unknown flag exits 2
    naming it. `argv` None means sys.argv[1:], as `run(main)` passes it.
    """
    return command_parser(prog, doc, add_arguments).parse_args(argv)


def positive_int(text: str) -> int:
    """An argparse `type=`: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


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
