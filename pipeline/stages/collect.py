"""Stage `collect`: one manifest of the cells the ensemble reads, data/cells.json.

    python -m pipeline.stages.collect

Lists the md5 of every file of models/<model>/fold<k>/ for the models of train.models (and
stage meta's, models/meta/, when meta.enabled) and the folds of train.folds. Stages ensemble
and pseudo depend on this file instead of the whole models/ folder: folders of models or folds
no longer listed (left behind by `dvc exp apply` of a run with another model list, say) change
models/ but not the manifest, so only this cheap stage looks changed, and rerunning it writes
the same bytes; ensemble and pseudo rerun only when a listed cell changed.
"""

from __future__ import annotations

from pipeline.config.params import load_params
from pipeline.config.paths import CELLS_MANIFEST, fold_dir
from pipeline.config.schema import META_MODEL, Params
from pipeline.io.console import PipelineError, parse_stage_args, run
from pipeline.io.files import file_md5, write_json


def listed_cells(params: Params) -> list[tuple[str, int]]:
    """The (model, fold) cells the ensemble weighs, in its order (see members.ensemble_members)."""
    models = list(params.train.models) + ([META_MODEL] if params.meta.enabled else [])
    return [(model, fold) for model in models for fold in params.train.folds]


def cell_manifest(params: Params) -> dict[str, dict[str, str]]:
    """{cell folder: {file name: md5}} of every listed cell, every file in it.

    Raises:
        PipelineError: a listed cell is missing (not trained).
    """
    manifest = {}
    for model, fold in listed_cells(params):
        cell = fold_dir(model, fold)
        if not cell.is_dir():
            raise PipelineError(f"{cell}: missing; run `dvc repro` to train {model} fold {fold}")
        files = sorted(p for p in cell.rglob("*") if p.is_file())
        manifest[cell.as_posix()] = {p.relative_to(cell).as_posix(): file_md5(p) for p in files}
    return manifest


def main(argv: list[str] | None = None) -> dict[str, dict[str, str]]:
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.collect")
    manifest = cell_manifest(load_params())
    write_json(CELLS_MANIFEST, manifest)
    print(f"collect: {len(manifest)} cell(s) -> {CELLS_MANIFEST}")
    return manifest


if __name__ == "__main__":
    run(main)
