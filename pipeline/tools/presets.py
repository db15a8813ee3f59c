"""Run a preset (presets/<name>.yaml) as a DVC experiment: its keys set over params.yaml.

    leaf preset leaf-silhouettes                 # dvc exp run -n leaf-silhouettes -S ...
    leaf preset leaf-silhouettes --show          # the -S overrides and what they change
    leaf preset my.yaml --name try1 --queue      # queue it (dvc exp run --queue), run later
    leaf preset classify-leaves-gpu -S train.folds=[0]

A preset holds only the keys it changes. It is deep-merged over params.yaml, except that a
`train.models` mapping replaces params.yaml's whole: a preset that lists models means "train
these models". The merged params are validated (as every stage would) before anything runs.

The default runs `dvc exp run -n NAME -S key=value ...` in the workspace: DVC writes the
values into params.yaml (comments kept, in its own YAML style: docs/experiments.md) and leaves
them there with the outputs, so params.yaml, dvc.lock and the outputs agree afterwards;
`git restore params.yaml` returns to the committed settings. `--temp` and `--queue` leave the
workspace alone (`dvc exp apply NAME` brings a result in); they run in a copy under .dvc/tmp,
where a data.root such as ../shared/... would point at nothing: it is refused, give it absolute.
DVC refuses a name it already has: pick another with --name. `--write` instead rewrites
params.yaml itself, without comments.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import yaml

from pipeline.config.params import PARAMS_FILE, parse_params
from pipeline.config.presets import (
    add_set_argument,
    changes,
    load_preset,
    merged_params,
    preset_overrides,
    preset_path,
    read_params_file,
    set_dotted,
)
from pipeline.io import console
from pipeline.io.commands import run_to_its_end
from pipeline.io.console import PipelineError
from pipeline.io.files import write_bytes, write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="a preset in presets/ (e.g. leaf-silhouettes) or a YAML path")
    add_set_argument(parser)
    action = parser.add_mutually_exclusive_group()
    action.add_argument(
        "--show",
        action="store_true",
        help="print the dvc exp run command (its -S overrides) and the keys it changes; no run",
    )
    action.add_argument(
        "--write",
        action="store_true",
        help="instead of an experiment, rewrite params.yaml as the merged params (this loses its "
        "comments and layout; the default keeps them), then run dvc repro yourself",
    )
    parser.add_argument(
        "--name",
        "-n",
        dest="exp_name",
        metavar="EXP",
        help="experiment name (default: the preset's name)",
    )
    parser.add_argument(
        "--queue",
        action="store_true",
        help="queue the experiment (dvc exp run --queue; dvc queue start runs it)",
    )
    parser.add_argument(
        "--temp",
        action="store_true",
        help="run it in a temporary copy (under .dvc/tmp), leaving the workspace alone; "
        "a relative data.root outside the project (../shared/...) must then be absolute",
    )


def prepare(args: argparse.Namespace) -> tuple[dict, dict, list[str], list[str]]:
    """(base, merged, -S overrides, dvc command) for `args`; the merged params validated."""
    from pipeline.config.checks import CHECKS  # imports the model registry: only when needed

    path = preset_path(args.name)
    preset = load_preset(path)
    base = read_params_file()
    for assignment in args.sets:
        set_dotted(preset, base, assignment)
    merged = merged_params(preset, base)
    parse_params(merged, source=f"{path} over {PARAMS_FILE}", checks=CHECKS)
    overrides = preset_overrides(preset, base)
    command = ["dvc", "exp", "run", "-n", args.exp_name or path.stem]
    command += [flag for flag in ("--queue", "--temp") if getattr(args, flag[2:])]
    for override in overrides:
        command += ["-S", override]
    return base, merged, overrides, command


def check_root_resolves_in_a_copy(root: str) -> None:
    """--temp and --queue run in a copy of the project under .dvc/tmp, where a relative data.root
    that leaves the project (../shared/...) points at nothing."""
    project = Path.cwd().resolve()
    if not Path(root).is_absolute() and not (project / root).resolve().is_relative_to(project):
        raise PipelineError(
            f"data.root = {root!r} is outside the project, and --temp and --queue run in a copy "
            f"of it under .dvc/tmp, where that path points at nothing: give it absolute, "
            f"-S data.root={(project / root).resolve()}"
        )


def run(args: argparse.Namespace) -> int:
    """Show, write or run the preset `args.name`; returns the exit code (dvc's when it runs)."""
    if args.write and (args.queue or args.temp or args.exp_name):
        raise PipelineError("--name, --queue and --temp are dvc exp run's; --write runs nothing")
    base, merged, overrides, command = prepare(args)
    if args.show:
        print(shlex.join(command))
        print(f"changes to {PARAMS_FILE}:")
        print("\n".join(f"  {line}" for line in changes(merged, base)) or "  (none)")
        return 0
    if args.write:
        write_text(PARAMS_FILE, yaml.safe_dump(merged, sort_keys=False, allow_unicode=True))
        print(f"wrote {PARAMS_FILE} ({len(overrides)} overrides of {args.name}); run dvc repro")
        return 0
    from pipeline.competition.inputs import check_data_root  # reads images: only when it runs

    check_data_root(merged["data"]["root"])  # as stage check would, before DVC starts
    if args.queue or args.temp:
        check_root_resolves_in_a_copy(merged["data"]["root"])
    print(shlex.join(command), flush=True)
    in_workspace = not (args.queue or args.temp)
    before = PARAMS_FILE.read_bytes()
    try:
        code = run_to_its_end(command)  # Ctrl-C: dvc stops the stage and cleans up, then we go on
    except FileNotFoundError:
        raise PipelineError(
            "dvc not found: pip install dvc (or the project: pip install -e .)"
        ) from None
    if code != 0 and in_workspace and PARAMS_FILE.read_bytes() != before:
        # dvc exp run wrote the preset's values into params.yaml and leaves them on failure
        write_bytes(PARAMS_FILE, before)
        print(f"{args.name} failed (exit code {code}); {PARAMS_FILE} is back as it was")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="leaf preset", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    console.run(lambda argv: sys.exit(main(argv)))
