"""Print a compact leaderboard of the DVC experiments: changed params, OOF accuracy, time.

    leaf leaderboard [--all] [--json-file EXP_SHOW.json]

Reads `dvc exp show --json` (or a saved copy of it with --json-file) and prints one row per
experiment of the current commit, best first: its name, its state (success, failed, queued, ...),
the ensemble's OOF accuracy (results/ensemble/metrics.json: `oof_accuracy_fitted_cross`, the
fitted weights scored on folds they were not fitted on, when present, else `oof_accuracy`), when
DVC says it was made (DVC records no duration), and the params.yaml values that differ from the
baseline commit's, written as `-S` overrides (`+key=...` added, `~key` removed). The baseline
commit is the first row's reference; `--all` also lists the experiments of older commits.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline import console
from pipeline.console import PipelineError, command_parser
from pipeline.dvc_cli import exp_show_json
from pipeline.paths import ENSEMBLE_METRICS

PARAMS_SOURCE = "params.yaml"
ACCURACY_KEYS = ("oof_accuracy_fitted_cross", "oof_accuracy")
HEADER = ("experiment", "state", "oof_acc", "created", "changed params")


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


def accuracy_of(data: dict[str, Any]) -> float | None:
    """The ensemble's cross-fitted OOF accuracy when present, else its plain one; None if none."""
    metrics = ((data.get("metrics") or {}).get(str(ENSEMBLE_METRICS)) or {}).get("data") or {}
    for key in ACCURACY_KEYS:
        if isinstance(metrics.get(key), (int, float)):
            return float(metrics[key])
    return None


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


def leaderboard(entries: list[dict[str, Any]], every_commit: bool = False) -> list[tuple]:
    """Rows (name, state, accuracy, created, changes) from `dvc exp show --json`'s entries,
    the baseline commit first, then its experiments by accuracy, best first."""
    commits = [entry for entry in entries if entry.get("rev") != "workspace"]
    if not commits:
        raise PipelineError("dvc exp show lists no commit: commit the project first")
    rows = []
    for commit in commits if every_commit else commits[:1]:
        data = commit.get("data") or {}
        baseline = params_of(data)
        name = commit.get("name") or str(commit.get("rev", "?"))[:7]
        rows.append((name, "baseline", accuracy_of(data), data.get("timestamp"), []))
        ranked = [
            (
                exp_name,
                state,
                accuracy_of(exp),
                exp.get("timestamp"),
                changed_params(params_of(exp), baseline),
            )
            for exp_name, state, exp in experiments(commit)
        ]
        ranked.sort(key=lambda row: (row[2] is None, -(row[2] or 0.0)))
        rows.extend(ranked)
    return rows


def format_rows(rows: list[tuple]) -> str:
    """A plain text table: one line per row, params last and unpadded."""
    cells = [HEADER] + [
        (
            name,
            state,
            "-" if accuracy is None else f"{accuracy:.4f}",
            (created or "-")[:19].replace("T", " "),
            " ".join(changes) or "-",
        )
        for name, state, accuracy, created, changes in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True))
        + "  "
        + row[-1]
        for row in cells
    )


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
