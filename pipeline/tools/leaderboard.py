"""Print a compact leaderboard of the DVC experiments: changed params, OOF accuracy, time.

    leaf leaderboard [--all] [--json-file EXP_SHOW.json]

Reads `dvc exp show --json` (or a saved copy of it with --json-file) and prints one row per
experiment of the current commit, best first: its name, its state (success, failed, queued,
...), the ensemble's honest OOF accuracy and which figure it is (results/ensemble/metrics.json:
`cross-fitted`, `oof_accuracy_fitted_cross`, the fitted weights scored on folds they were not
fitted on; `equal`, `oof_accuracy_equal`, every member weighted alike, where nothing was fitted
or one fold leaves nothing to fit on; `plain`, `oof_accuracy`, from a version that wrote
neither), its number of folds, when DVC says it was made (DVC records no duration), and the
params.yaml values that differ from the baseline commit's, written as `-S` overrides (`+key=...`
added, `~key` removed). The baseline commit is the first row's reference; `--all` also lists the
experiments of older commits. Runs on fewer folds than the most any experiment has rank after
the others, and runs on another `data.root` are listed apart, after a line naming it: their
accuracies are not comparable.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.competition.dvc_cli import exp_show_json
from pipeline.config.paths import ENSEMBLE_METRICS
from pipeline.io import console
from pipeline.io.console import PipelineError, command_parser

PARAMS_SOURCE = "params.yaml"
# The keys of the honest OOF accuracy, the first one present ranked (see `accuracy_key`), and
# how a row names the figure it shows.
SCORED_AS = {
    "oof_accuracy_fitted_cross": "cross-fitted",
    "oof_accuracy_equal": "equal",
    "oof_accuracy": "plain",
}
HEADER = ("experiment", "state", "oof_acc", "scored", "folds", "created", "changed params")


class Row(NamedTuple):
    """One line of the leaderboard: an experiment, or a commit's baseline."""

    name: str
    state: str
    accuracy: float | None  # `accuracy_of`
    folds: int | None
    created: str | None  # when DVC says it was made
    changes: list[str]  # `changed_params` against the baseline
    data_root: Any
    scored: str | None  # `scored_as`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--all", action="store_true", help="also older commits' experiments")
    parser.add_argument(
        "--json-file", type=Path, help="read this saved `dvc exp show --json` output instead"
    )


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings → {"a.b.c": leaf}; an empty mapping is a leaf `{}`."""
    if not isinstance(tree, dict) or not tree:
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def params_of(data: dict[str, Any]) -> dict[str, Any]:
    return flatten(((data.get("params") or {}).get(PARAMS_SOURCE) or {}).get("data") or {})


def ensemble_metrics(data: dict[str, Any]) -> dict[str, Any]:
    return ((data.get("metrics") or {}).get(str(ENSEMBLE_METRICS)) or {}).get("data") or {}


def accuracy_key(data: dict[str, Any]) -> str | None:
    """The metrics key of the ensemble's honest OOF accuracy, the one metric ranked:
    cross-fitted where weights are fitted on two folds or more, else the equal weights' (nothing
    was fitted on the folds: a one-fold run's fitted weights are scored on the fold they were
    fitted on), as stage ensemble's `adds` takes it. Plain `oof_accuracy` for metrics without
    `oof_accuracy_equal` and unfitted weights; None where there is none."""
    metrics = ensemble_metrics(data)
    present = [key for key in SCORED_AS if isinstance(metrics.get(key), (int, float))]
    if present and present[0] == "oof_accuracy" and "oof_accuracy_fitted" in metrics:
        return None
    return present[0] if present else None


def accuracy_of(data: dict[str, Any]) -> float | None:
    key = accuracy_key(data)
    return None if key is None else float(ensemble_metrics(data)[key])


def scored_as(data: dict[str, Any]) -> str | None:
    """Which figure `accuracy_of` is: cross-fitted, equal or plain (see `accuracy_key`)."""
    key = accuracy_key(data)
    return SCORED_AS[key] if key else None


def folds_of(data: dict[str, Any]) -> int | None:
    folds = ensemble_metrics(data).get("num_folds")
    return folds if isinstance(folds, int) else None


def show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def changed_params(params: dict[str, Any], baseline: dict[str, Any]) -> list[str]:
    """`params`' differences from `baseline`, as dvc exp run -S would write them; none when
    `params` is empty (a queued or failed experiment DVC reports no params for)."""
    if not params:
        return []
    changes = [
        f"{key}={show(value)}" if key in baseline else f"+{key}={show(value)}"
        for key, value in params.items()
        if baseline.get(key, object()) != value
    ]
    return changes + [f"~{key}" for key in baseline if key not in params]


def experiments(commit: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(name, state, data) of each experiment `dvc exp show --json` lists under a commit."""
    for experiment in commit.get("experiments") or []:
        revs = experiment.get("revs") or [{}]
        head = revs[0]
        state = (experiment.get("executor") or {}).get("state") or "success"
        name = experiment.get("name") or head.get("name") or str(head.get("rev", "?"))[:7]
        yield name, state, head.get("data") or {}


def row_of(name: str, state: str, data: dict[str, Any], changes: list[str], root: Any) -> Row:
    """The row of a baseline or an experiment, from its `dvc exp show` data."""
    return Row(
        name,
        state,
        accuracy_of(data),
        folds_of(data),
        data.get("timestamp"),
        changes,
        root,
        scored_as(data),
    )


def ranked(rows: list[Row]) -> list[Row]:
    """Best first by the honest OOF accuracy; runs on fewer folds than the most any row has
    after the rest, and those without an accuracy last."""
    most = max((row.folds for row in rows if row.folds is not None), default=None)
    return sorted(
        rows,
        key=lambda row: (
            row.accuracy is None,
            row.folds not in (None, most),
            -(row.accuracy or 0),
        ),
    )


def leaderboard(entries: list[dict[str, Any]], every_commit: bool = False) -> list[Row]:
    """The rows of `dvc exp show --json`'s entries: each commit's baseline, then its
    experiments on the baseline's data.root ranked (see `ranked`), then those on any other
    data.root, ranked among themselves."""
    commits = [entry for entry in entries if entry.get("rev") != "workspace"]
    if not commits:
        raise PipelineError("dvc exp show lists no commit: commit the project first")
    rows = []
    for commit in commits if every_commit else commits[:1]:
        data = commit.get("data") or {}
        baseline = params_of(data)
        root = baseline.get("data.root")
        name = commit.get("name") or str(commit.get("rev", "?"))[:7]
        rows.append(row_of(name, "baseline", data, [], root))
        groups: dict[Any, list[Row]] = {root: []}
        for exp_name, state, exp in experiments(commit):
            params = params_of(exp)
            exp_root = params.get("data.root", root)  # none for a queued or failed run
            row = row_of(exp_name, state, exp, changed_params(params, baseline), exp_root)
            groups.setdefault(exp_root, []).append(row)
        for group in groups.values():
            rows.extend(ranked(group))
    return rows


def format_rows(rows: list[Row]) -> str:
    """A plain text table: one line per row, params last and unpadded; a line before each run
    of rows on another data.root, whose accuracies are not comparable with those above."""
    cells, roots = [HEADER], [None]
    for row in rows:
        cells.append(
            (
                row.name,
                row.state,
                "-" if row.accuracy is None else f"{row.accuracy:.4f}",
                row.scored or "-",
                "-" if row.folds is None else str(row.folds),
                (row.created or "-")[:19].replace("T", " "),
                " ".join(row.changes) or "-",
            )
        )
        roots.append(row.data_root)
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER) - 1)]
    lines = []
    for index, row in enumerate(cells):
        if index > 1 and roots[index] != roots[index - 1]:
            lines.append(f"-- data.root = {roots[index]} (not comparable with the rows above)")
        padded = "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        lines.append(f"{padded}  {row[-1]}")
    return "\n".join(lines)


def load_entries(json_file: Path | None) -> list[dict[str, Any]]:
    if json_file is None:
        return exp_show_json()
    try:
        return json.loads(json_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PipelineError(
            f"{json_file}: not a readable `dvc exp show --json` file ({err})"
        ) from None


def run(args: argparse.Namespace) -> None:
    print(format_rows(leaderboard(load_entries(args.json_file), args.all)))


def main(argv: list[str] | None = None) -> None:
    run(command_parser("leaf leaderboard", __doc__, add_arguments).parse_args(argv))


if __name__ == "__main__":
    console.run(main)
