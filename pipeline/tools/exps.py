"""`dvc exp show` narrowed to the key params and the OOF accuracies: `leaf exps [dvc flags]`.

    leaf exps                         # every experiment of the current commit, key columns only
    leaf exps --all-commits --sort-by oof_accuracy_fitted_cross --sort-order desc  # dvc's flags

Plain `dvc exp show` already opens with the OOF accuracies and `setup.*` (the ensemble's
metrics.json is the project's one headline metrics file), then shows every param of params.yaml
and every dependency's hash: DVC has no setting that picks its columns, only the --drop/--keep
flags of each call. This is `dvc exp show --drop '.*'` with a --keep per column below, and
passes its arguments to dvc as they are (after an optional `--`). Per-model overrides show as
train.models.<name>.<key>; a model listed without overrides (`{}`) has no params column, but
`setup.models` names every member.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from pipeline.competition.dvc_cli import dvc_executable
from pipeline.io import console

KEEP = (
    "Experiment",
    "Created",
    "State",
    r"^data\.root$",  # which competition: runs on other data do not compare
    r"^train\.models\.",  # per-model overrides: train.models.<model>.<key>
    r"^train\.folds$",
    r"^train\.defaults\.(image_size|epochs|optimizer\.lr)$",
    r"^oof_accuracy(_fitted_cross)?$",
    r"^setup\.",  # the members and their image size, epochs and lr (results/ensemble/metrics.json)
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dvc_args", nargs=argparse.REMAINDER, help="more `dvc exp show` flags")
    parser.set_defaults(leaf_rest="dvc_args")  # `leaf exps --csv` too, not only `-- --csv`


def command(extra: list[str]) -> list[str]:
    """The `dvc exp show` command line `leaf exps EXTRA` runs."""
    extra = extra[1:] if extra[:1] == ["--"] else extra
    keeps = [flag for regex in KEEP for flag in ("--keep", regex)]
    return [dvc_executable(), "exp", "show", "--drop", ".*", *keeps, *extra]


def run(args: argparse.Namespace) -> int:
    return subprocess.run(command(args.dvc_args)).returncode


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, _ = console.command_parser("leaf exps", __doc__, add_arguments).parse_known_args(argv)
    args.dvc_args = argv  # as typed, as `leaf exps` passes them (leaf_rest)
    return run(args)


if __name__ == "__main__":
    console.run(main)
