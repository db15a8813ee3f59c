"""DVCLive logging of one cell's epochs (rank 0 only under torchrun)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from dvclive import Live

from pipeline.config.paths import fold_results_dir
from pipeline.io.files import atomic_path
from pipeline.training import distributed


def log_epoch(live: Live, metrics: dict[str, float]) -> None:
    for name, value in metrics.items():
        live.log_metric(name, value)
    live.next_step()


class NoLive:
    """What processes other than rank 0 log to under torchrun: nothing (rank 0 logs the same)."""

    def __init__(self):
        self.summary: dict[str, Any] = {}

    def log_metric(self, name: str, value: float) -> None:
        pass

    def next_step(self) -> None:
        pass


@contextlib.contextmanager
def open_live(model: str, fold: int) -> Iterator[Live | NoLive]:
    """The cell's DVCLive run, renamed into place as the block ends; rank 0's only."""
    if not distributed.is_main():
        yield NoLive()
        return
    with (
        atomic_path(fold_results_dir(model, fold)) as live_dir,
        Live(str(live_dir), dvcyaml=False, save_dvc_exp=False, report=None) as live,
    ):
        yield live
