"""Stage `check`: validate the whole params.yaml before any other stage runs.

    python -m pipeline.stages.check

The first stage of the pipeline: every other stage depends on its marker, data/params_checked.txt,
so `dvc repro` (and `dvc exp run -S key=value`) runs it first and stops here on a bad setting,
before DVC deletes the outputs of a stage it would rerun (a trained cell, its metrics and
plots). It checks what every stage checks on load (pipeline.config.params) plus the backbones, the
`pretrained:` weight paths and the transforms (pipeline.config.checks), and that `data.root` exists
(unless it is the folder stage generate writes), naming what to do when it does not. It warns of
the keys params.yaml leaves out: they take the schema's fallbacks, several plainer than the
shipped values (docs/configuration.md lists them).

The marker's text never changes, so a stage reruns for its own params only, never because the
marker was rewritten; dvc.yaml keeps it (`persist: true`) while the check runs, so a failed check
leaves no output deleted either. It first removes the empty folders under models/ and
checkpoints/ that `dvc exp run` creates for outs it could not check out (a model just added with
-S), so a run that fails here leaves none behind.
"""

from __future__ import annotations

from pipeline.competition.inputs import check_data_root
from pipeline.config.checks import load_checked_params
from pipeline.config.params import left_out_keys
from pipeline.config.paths import CHECKPOINTS_DIR, MODELS_DIR, PARAMS_CHECKED
from pipeline.io.console import parse_stage_args, run, warn
from pipeline.io.files import remove_empty_folders, write_text

MARKER_TEXT = (
    "params.yaml passed stage check (the schema, backbones and transforms).\n"
    "This text never changes: the stages depend on this file only to run after the check.\n"
)


def main(argv: list[str] | None = None) -> None:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.check")
    for folder in (MODELS_DIR, CHECKPOINTS_DIR):
        remove_empty_folders(folder)
    params = load_checked_params()
    check_data_root(params.data.root)
    left_out = left_out_keys(params)
    if left_out:
        more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        warn(
            f"params.yaml leaves out {', '.join(left_out[:5])}{more}: they take the schema's "
            "fallbacks, several of which are plainer than the shipped params.yaml's (no stage "
            "meta, 10 epochs, no augmentation; docs/configuration.md lists them)"
        )
    write_text(PARAMS_CHECKED, MARKER_TEXT)
    print(
        f"check: params.yaml is valid ({len(params.train.models)} model(s), folds "
        f"{params.train.folds}) -> {PARAMS_CHECKED}"
    )


if __name__ == "__main__":
    run(main)
