"""`leaf`: the project's tools outside the DVC pipeline, one subcommand each.

    leaf predict PATH... [--top-k 5] [--csv OUT.csv]
    leaf validate SUBMISSION [--test-csv CSV] [--classes JSON | --train-csv CSV]
    leaf preview [--model NAME] [--split train|eval] [--images 8] [--samples 6] [--out PNG]
    leaf kaggle download [--competition NAME] [--dest DIR] [--force] [--no-dvc-add]
    leaf kaggle submit [--competition NAME] [--file FILE] [-m NOTE] [--test-csv CSV]
        [--classes JSON | --train-csv CSV]
    leaf kaggle notebook [--source repo|wheel ...] [--dir DIR]; leaf kaggle push [--dir DIR]
    leaf preset ...
    leaf exps [dvc exp show flags]
    leaf leaderboard [--all] [--json-file FILE]

Each subcommand is a module of pipeline/tools/ (`leaf preset` is pipeline/tools/presets.py)
with a docstring whose first line is the subcommand's help, `add_arguments(parser)` and
`run(args)`; a parser default `leaf_rest=NAME` gives the tool every argument after its name, as
typed, in `args.NAME` (`leaf exps` passes them to dvc). Only the chosen subcommand's module is
imported, so `leaf --help` and `leaf validate --help` start without loading torch. A user's
error (PipelineError, ParamsError) is one `error: ...` paragraph on stderr and exit code 2, like
the stages; so is a bad flag.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

PROG = "leaf"
TOOLS_DIR = Path(__file__).resolve().parent  # pipeline/tools/, where this module lives
COMMANDS = {  # subcommand -> its module under pipeline/tools/
    "predict": "predict",
    "validate": "validate",
    "preview": "preview",
    "kaggle": "kaggle",
    "preset": "presets",
    "exps": "exps",
    "leaderboard": "leaderboard",
}
TOOL_INTERFACE = ("add_arguments", "run")


def module_name(command: str) -> str:
    return f"pipeline.tools.{COMMANDS[command]}"


def summary(command: str) -> str:
    """The first line of the tool module's docstring, read from its source without importing it."""
    path = TOOLS_DIR / f"{COMMANDS[command]}.py"
    try:
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    except (OSError, SyntaxError, ValueError):
        return f"(not available: {module_name(command)} cannot be read)"
    return next((line.strip() for line in doc.splitlines() if line.strip()), "")


def chosen_command(argv: list[str]) -> str | None:
    """The subcommand `argv` names: its first argument that is not an option, if a known one."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg if arg in COMMANDS else None
    return None


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def load_tool(command: str) -> ModuleType:
    """Import the subcommand's module; a missing or incomplete one ends with `error:`, exit 2."""
    name = module_name(command)
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:
            raise
        fail(f"`{PROG} {command}` is not available: there is no module {name}")
    missing = [attr for attr in TOOL_INTERFACE if not callable(getattr(module, attr, None))]
    if missing:
        fail(f"`{PROG} {command}` is not available: {name} does not define {', '.join(missing)}")
    return module


def refuse_a_subfolder() -> None:
    """The tools read the project's files (params.yaml, data/, models/) from the working
    directory: in a folder below the project's root, say where to run them instead."""
    from pipeline.config.paths import PROJECT_MARKER, project_root

    root, here = project_root(), Path.cwd().resolve()
    if root != here:
        fail(
            f"`{PROG}` runs in the project's root, {root} (the folder holding {PROJECT_MARKER}), "
            f"not in {here}: cd {os.path.relpath(root)} and run it again"
        )


def build_parser(
    command: str | None = None,
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser | None]:
    """`leaf`'s parser and `command`'s subparser, the only one given its arguments (imported)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tools of the leaf pipeline: predict, validate, preview, kaggle, presets, "
        "exps, leaderboard.",
        epilog=f"`{PROG} COMMAND --help` describes a command's arguments.",
    )
    commands = parser.add_subparsers(dest="leaf_command", metavar="COMMAND", required=True)
    chosen = None
    for name in COMMANDS:
        help_line = summary(name)
        sub = commands.add_parser(name, help=help_line, description=help_line)
        if name == command:
            module = load_tool(name)
            module.add_arguments(sub)
            sub.set_defaults(leaf_run=module.run)
            chosen = sub
    return parser, chosen


def main(argv: list[str] | None = None) -> int | None:
    """Parse `argv` (default sys.argv[1:]) and run the chosen tool; exit 2 on a user's error.

    Returns the exit code when the tool's `run` returns an int (`leaf preset` passes dvc's on),
    else None (0); any other result, a table say, is not an exit code.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, sub = build_parser(chosen_command(argv))
    args, unknown = parser.parse_known_args(argv)
    if "leaf_rest" in args:  # the tool passes its arguments on as they are (`leaf exps --csv`)
        setattr(args, args.leaf_rest, argv[argv.index(args.leaf_command) + 1 :])
    elif unknown:  # named with the subcommand's usage, not only `leaf`'s
        (sub or parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    from pipeline.io.console import run  # only now: it loads tqdm, pydantic and the params schema

    refuse_a_subfolder()
    results = []
    run(lambda _argv: results.append(args.leaf_run(args)))
    code = results[0] if results else None
    return code if isinstance(code, int) and not isinstance(code, bool) else None


if __name__ == "__main__":
    sys.exit(main())
