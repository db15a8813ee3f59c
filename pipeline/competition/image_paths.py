"""Where a table's image cells point: a file in a folder of data.root, named by the cell plus
`data.image_suffix`.

Kaggle's tables name their images in several ways: `images/0.jpg` from the competition folder
(Classify Leaves), `0.jpg` in a folder of their own (Cassava's train_images/ and test_images/),
or a bare id whose file is `<id>.png` (APTOS). `data.train_images`, `data.test_images` and
`data.image_suffix` say which; when the files are elsewhere, stage prepare's one error gives
the settings that find them.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.competition.inputs import InputDataError, raise_problems, row_label
from pipeline.data.images import IMAGE_SUFFIXES


def resolve_paths(
    images: pd.Series, folder: Path, table: Path, key: str = "data.root", suffix: str = ""
) -> list[str]:
    """Image cells → file paths under `folder` (`key`'s), each cell plus `suffix`; a path that
    leaves the folder is refused."""
    problems, paths = [], []
    example = ", e.g. images/<file>" if key == "data.root" else ""
    for i, image in images.items():
        relative = PurePosixPath(image.replace("\\", "/"))
        if relative.is_absolute():
            problems.append(
                f"{row_label(i)}: image path {image!r} is absolute; write it relative to {key} "
                f"({folder}){example}"
            )
        elif ".." in relative.parts:
            problems.append(f"{row_label(i)}: image path {image!r} leaves {key} ({folder}) by '..'")
        paths.append(os.path.normpath(folder / relative) + suffix)
    raise_problems(table, problems)
    return paths


def check_image_folder(
    images: pd.Series, root: Path, folder: str, key: str, suffix: str, table: Path
) -> None:
    """One clear error, with the settings that find them, when the table's image cells name
    files in another folder of data.root or with another suffix (`0.jpg` for images/0.jpg,
    Cassava's train_images/, APTOS's ids), instead of one `image file not found` per row.

    `key` (data.train_images or data.test_images) is set to `folder`.
    """
    base = root / folder
    missing = [image for image in images if not file_of(base, image, suffix).exists()]
    place = image_place(root, missing[0]) if missing else None
    if place is None:
        return  # check_images names each file that is nowhere
    other, other_suffix = place
    found = [image for image in missing if file_of(other, image, other_suffix).is_file()]
    settings = []
    if other != base:
        settings.append(f"{key}: {other.relative_to(root).as_posix()}")
    if other_suffix != suffix:
        settings.append(f"data.image_suffix: {other_suffix or repr('')}")
    raise InputDataError(
        f"{table}: {len(missing)} of {len(images)} image files not found under {base}, but "
        f"{len(found)} of them are in {other} (e.g. {found[0]!r} is "
        f"{file_of(other, found[0], other_suffix)}): set {' and '.join(settings)} (the "
        "submission keeps the cells as written)"
    )


def file_of(folder: Path, image: str, suffix: str) -> Path:
    return folder / (image + suffix)


def image_place(root: Path, image: str) -> tuple[Path, str] | None:
    """The folder of data.root (itself or one below) and the suffix that name an existing file
    for the cell `image`; None when there is none."""
    folders = [root, *sorted(path for path in root.iterdir() if path.is_dir())]
    suffixes = ("", *IMAGE_SUFFIXES, *(suffix.upper() for suffix in IMAGE_SUFFIXES))
    return next(
        (
            (folder, suffix)
            for folder in folders
            for suffix in suffixes
            if file_of(folder, image, suffix).is_file()
        ),
        None,
    )
