"""Stage `generate`: write a seeded synthetic leaf dataset (settings: params.yaml `generate`).

    python -m pipeline.stages.generate

Writes a seeded synthetic leaf dataset to data/synthetic in the Kaggle "Classify Leaves" layout:
train.csv (image,label), test.csv (image), sample_submission.csv (image,label) and images/N.jpg,
numbered by one running index over train and test images in seeded random order.

Species differ only in shape: outline (ovate, elliptic, lanceolate, cordate, 3/5/7-lobed),
margin (entire, finely serrate, coarsely dentate), aspect ratio (broad, narrow) and venation
(sparse or dense pinnate, palmate). Colour comes from a small palette shared by several species,
so it does not identify a species. Every image varies in rotation, scale, position, lighting,
background, shape jitter and petiole. Image N is drawn from its own random stream seeded by
(seed, N), so the same parameters always give byte-identical files.
"""

from __future__ import annotations

from pipeline.config.params import load_params
from pipeline.config.paths import SYNTHETIC_DIR
from pipeline.data.synthetic import generate_dataset, held_out_per_species
from pipeline.io.console import parse_stage_args, run


def main(argv: list[str] | None = None) -> None:
    """Generate data/synthetic from the `generate` group of params.yaml."""
    parse_stage_args(argv, __doc__, "python3 -m pipeline.stages.generate")
    params = load_params().generate
    generate_dataset(SYNTHETIC_DIR, params)
    n_test = held_out_per_species(params) * params.num_species
    n_train = params.images_per_species * params.num_species - n_test
    print(
        f"generated {params.num_species} species, {n_train} train + {n_test} test images "
        f"({params.image_size}px) in {SYNTHETIC_DIR}"
    )


if __name__ == "__main__":
    run(main)
