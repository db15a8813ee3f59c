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
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pandas as pd

from pipeline.competition.inputs import InputDataError, raise_problems, row_label
from pipeline.config.schema import DataParams
from pipeline.data.images import IMAGE_SUFFIXES
from pipeline.io.console import format_problems

SEARCHED_SUFFIXES = ("", *IMAGE_SUFFIXES, *(suffix.upper() for suffix in IMAGE_SUFFIXES))
PROBED_CELLS = 20  # the missing cells whose files are looked for elsewhere
SEARCHED_DEPTH = 2  # root, its folders and theirs (an archive unzipped into a folder of its name)

Tables = dict[str, tuple[list[str], Path]]  # "train"/"test" -> (image cells, the table's path)


def resolve_paths(images: pd.Series, place: Place, table: Path, key: str) -> list[str]:
    """Image cells → their files in `place` (the folder of setting `key`); a cell that leaves
    the folder is refused."""
    problems = []
    example = ", e.g. images/<file>" if key == "data.root" else ""
    for i, image in images.items():
        relative = cell_path(image)
        if relative.is_absolute():
            problems.append(
                f"{row_label(i)}: image path {image!r} is absolute; write it relative to {key} "
                f"({place.folder}){example}"
            )
        elif ".." in relative.parts:
            problems.append(
                f"{row_label(i)}: image path {image!r} leaves {key} ({place.folder}) by '..'"
            )
    raise_problems(table, problems)
    return [str(place.file(image)) for image in images]


def cell_path(image: str) -> PurePosixPath:
    """A cell as a relative path, Windows separators read as '/'."""
    return PurePosixPath(image.replace("\\", "/"))


@dataclass(frozen=True)
class Place:
    """Where a table's cells name files: a folder, and the suffix added to each cell."""

    folder: Path
    suffix: str

    @classmethod
    def configured(cls, root: Path, params: DataParams, kind: str) -> Place:
        """Where the settings put table `kind`'s ("train"/"test") files."""
        return cls(root / getattr(params, f"{kind}_images"), params.image_suffix)

    def file(self, image: str) -> Path:
        """The file cell `image` names."""
        return Path(os.path.normpath(self.folder / cell_path(image)) + self.suffix)

    def count(self, images: list[str]) -> int:
        return sum(self.file(image).is_file() for image in images)


@dataclass(frozen=True)
class Elsewhere:
    """A table's images found more often in another place than the configured one."""

    place: Place
    found: int  # the table's images there
    absent: list[str]  # the cells with no file where the settings say


def check_image_places(
    root: Path, params: DataParams, tables: Tables, configured: dict[str, Place]
) -> None:
    """One clear error, with the settings that find them, when a table's image cells name files
    in another folder of data.root or with another suffix (`0.jpg` for images/0.jpg, Cassava's
    train_images/, APTOS's ids), instead of one `image file not found` per row.

    A place is advised only when it holds more of the table's images than the configured one,
    and never the other table's configured folder, so a file missing from the right folder is
    left to the per-row errors (train/ and test/ may both hold 0.jpg).
    """
    folders = {place.folder for place in configured.values()}
    elsewhere = {
        kind: better_place(cells, configured[kind], root, kind, folders - {configured[kind].folder})
        for kind, (cells, _) in tables.items()
    }
    if any(elsewhere.values()):
        raise InputDataError(places_message(root, params, tables, configured, elsewhere))


def places_message(
    root: Path,
    params: DataParams,
    tables: Tables,
    configured: dict[str, Place],
    elsewhere: dict[str, Elsewhere | None],
) -> str:
    """Each table whose files are elsewhere, then the settings that find them all."""
    found, changes = [], []
    for kind, (cells, table) in tables.items():
        if (other := elsewhere[kind]) is None:
            continue
        current, absent = configured[kind], other.absent
        there = next(image for image in absent if other.place.file(image).is_file())
        found.append(
            f"{table}: {len(absent)} of {len(cells)} image files not found (e.g. {absent[0]!r} "
            f"as {current.file(absent[0])}), but {other.found} are in {other.place.folder} "
            f"(e.g. {other.place.file(there)})"
        )
        if other.place.folder != current.folder:
            changes.append(f"data.{kind}_images: {other.place.folder.relative_to(root).as_posix()}")
    suffixes = [
        (elsewhere[kind].place if elsewhere[kind] else configured[kind]).suffix for kind in tables
    ]
    if len(set(suffixes)) == 1 and suffixes[0] != params.image_suffix:
        changes.append(f"data.image_suffix: {suffixes[0] or repr('')}")
    fix = f"set {' and '.join(changes)} (the submission keeps the cells as written)"
    if len(set(suffixes)) > 1:
        fix = (f"{fix}; " if changes else "") + (
            f"the training and test files end in different suffixes ({suffixes[0]!r}, "
            f"{suffixes[1]!r}), and data.image_suffix is one for both: rename one table's "
            "files, or write their suffix into its cells"
        )
    return (
        "image files not found where data.train_images, data.test_images and data.image_suffix "
        f"say:\n{format_problems(found)}\n{fix}"
    )


def better_place(
    images: list[str], current: Place, root: Path, kind: str, others: set[Path]
) -> Elsewhere | None:
    """The place of data.root, in none of the folders `others`, holding the most of `images`,
    when it holds more than `current` does; on a tie a folder named for the table (`kind`)
    wins, since training and test files may share names."""
    absent = [image for image in images if not current.file(image).is_file()]
    if not absent:
        return None
    folders = [folder for folder in folders_below(root, SEARCHED_DEPTH) if folder not in others]
    candidates = dict.fromkeys(
        place
        for image in absent[:PROBED_CELLS]
        for place in (Place(folder, suffix) for folder in folders for suffix in SEARCHED_SUFFIXES)
        if place.file(image).is_file()
    )
    counts = {place: place.count(images) for place in candidates}
    if not counts:
        return None
    best = max(counts, key=lambda place: (counts[place], kind in place.folder.name))
    held = len(images) - len(absent)
    return Elsewhere(best, counts[best], absent) if counts[best] > held else None


def folders_below(root: Path, depth: int) -> list[Path]:
    """`root` and the folders up to `depth` levels below it, each level in sorted order."""
    folders, level = [root], [root]
    for _ in range(depth):
        level = sorted(path for folder in level for path in folder.iterdir() if path.is_dir())
        folders += level
    return folders
