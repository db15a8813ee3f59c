"""`RunIf(min_gpus=1)`: one skipif mark whose reason says what is missing."""

from __future__ import annotations

import pytest
import torch


def RunIf(min_gpus: int = 0) -> pytest.MarkDecorator:  # noqa: N802 - reads like a decorator
    reasons = []
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if available < min_gpus:
        reasons.append(f"needs {min_gpus} CUDA GPU(s), found {available}")
    return pytest.mark.skipif(bool(reasons), reason="; ".join(reasons))
