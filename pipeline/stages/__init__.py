"""The pipeline's stages: one module per dvc.yaml stage, run as `python3 -m pipeline.stages.X`."""

import sys

from pipeline.io.console import end_quietly_on_ctrl_c

if sys.argv[:1] == ["-m"]:  # Python's argv while `-m` imports this package: a stage starts
    end_quietly_on_ctrl_c()
