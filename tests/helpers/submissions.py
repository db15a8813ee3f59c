"""The classes, test images and a valid submission that the submission tests (tests/test_submit.py,
tests/test_validate*.py) check against."""

from __future__ import annotations

import pandas as pd

CLASSES = ["acer", "betula", "quercus"]
COLUMNS = ["image", "label"]
TEST = pd.Series(["images/5.jpg", "images/2.jpg", "images/9.jpg"])
VALID_CSV = "image,label\nimages/5.jpg,acer\nimages/2.jpg,quercus\nimages/9.jpg,acer\n"


def valid() -> pd.DataFrame:
    return pd.DataFrame({"image": TEST, "label": ["acer", "quercus", "acer"]})
