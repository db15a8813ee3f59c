"""Stage `prepare` and the images: a missing, broken, oversized or misplaced image stops it with the
file and row named and nothing written; a valid image of any mode is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import images as imgs
from helpers.prepare import (
    check_consistent,
    fails,
    read_prepared,
    rel,
    table_name,
    write_params,
)

from pipeline.stages import prepare as prepare_stage

# ----------------------------------------------------------------------------------------------
# Bad images


@pytest.mark.parametrize("breakage", ["missing", "truncated", "zero_bytes", "text"])
def test_bad_image_is_refused_with_file_and_row(workdir, comp, breakage):
    image, _ = comp.train[4]
    path = comp.root / image
    if breakage == "missing":
        path.unlink()
    elif breakage == "truncated":
        imgs.write_truncated_jpeg(path)
    elif breakage == "zero_bytes":
        imgs.write_empty(path)
    else:
        imgs.write_text_file(path)
    message = fails(
        workdir,
        table_name(comp, "train.csv"),
        rel(comp, image),
        rows=(imgs.csv_line_of(comp.train_csv, image),),
    )
    if breakage == "missing":
        assert "not found" in message
    else:
        assert "cannot read image" in message
    # Only the broken image is reported.
    assert message.count("row ") == 1


def test_bad_test_image_names_test_csv(workdir, comp):
    image = comp.test[2]
    imgs.write_truncated_jpeg(comp.root / image)
    fails(
        workdir,
        table_name(comp, "test.csv"),
        rel(comp, image),
        rows=(imgs.csv_line_of(comp.test_csv, image),),
    )


def test_every_bad_image_is_reported_at_once(workdir, comp):
    broken = [comp.train[1][0], comp.train[7][0]]
    (comp.root / broken[0]).unlink()
    imgs.write_empty(comp.root / broken[1])
    fails(
        workdir,
        *(rel(comp, b) for b in broken),
        rows=tuple(imgs.csv_line_of(comp.train_csv, b) for b in broken),
    )


def test_image_cell_naming_a_directory_is_refused(workdir, comp):
    rows = list(comp.train)
    rows[3] = ("images", rows[3][1])  # the images/ folder itself
    imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    fails(workdir, table_name(comp, "train.csv"), rows=(5,))


@pytest.mark.parametrize("table", ["train.csv", "test.csv"])
def test_decompression_bomb_is_refused(workdir, comp, table):
    # 30,000 x 30,000 = 900 Mpx (2.7 GB as RGB) in a PNG of about 100 KB.
    bomb = "images/bomb.png"
    imgs.write_bomb_png(comp.root / bomb)
    if table == "train.csv":
        rows = [*comp.train[:2], (bomb, comp.train[2][1]), *comp.train[3:]]
        imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    else:
        tests = [comp.test[0], bomb, *comp.test[2:]]
        imgs.write_csv(comp.test_csv, ["image"], [[t] for t in tests])
        imgs.write_csv(comp.sample_csv, ["image", "label"], [[t, "x"] for t in tests])
    fails(
        workdir,
        table_name(comp, table),
        rel(comp, bomb),
        "30000x30000 pixels",
        "decompression bomb",
        rows=(4 if table == "train.csv" else 3,),
    )


def test_the_pixel_limit_is_data_max_megapixels(workdir, comp):
    write_params(workdir, max_megapixels=0.0005)  # the images are 32x32 = 0.001 megapixels
    fails(workdir, table_name(comp, "train.csv"), "over the limit of 0.0005 megapixels")


# ----------------------------------------------------------------------------------------------
# Valid images of any mode

SPECIAL_IMAGES = {
    "grayscale_jpeg": ("jpg", lambda p: imgs.write_grayscale(p)),
    "grayscale_png": ("png", lambda p: imgs.write_grayscale(p)),
    "rgba": ("png", imgs.write_rgba),
    "palette_transparent": ("png", lambda p: imgs.write_palette(p, transparency=True)),
    "palette": ("png", lambda p: imgs.write_palette(p, transparency=False)),
    "cmyk": ("jpg", imgs.write_cmyk_jpeg),
    "16bit": ("png", imgs.write_16bit_png),
    "exif_rotated": ("jpg", imgs.write_exif_rotated_jpeg),
}


@pytest.mark.parametrize("kind", SPECIAL_IMAGES)
def test_images_of_any_mode_are_accepted(workdir, comp, kind):
    suffix, write = SPECIAL_IMAGES[kind]
    train_image, test_image = f"images/{kind}_train.{suffix}", f"images/{kind}_test.{suffix}"
    write(comp.root / train_image)
    write(comp.root / test_image)
    rows = [*comp.train, (train_image, comp.train[0][1])]
    imgs.write_csv(comp.train_csv, ["image", "label"], rows)
    imgs.write_csv(comp.test_csv, ["image"], [[t] for t in [*comp.test, test_image]])
    imgs.write_csv(
        comp.sample_csv, ["image", "label"], [[t, "x"] for t in [*comp.test, test_image]]
    )
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert list(train["image"])[-1] == train_image
    assert list(test["image"])[-1] == test_image
    check_consistent(workdir, classes, train, test)


def test_image_cells_without_the_images_folder_are_one_error_giving_the_setting(workdir, comp):
    for table in (comp.train_csv, comp.test_csv, comp.sample_csv):
        table.write_text(table.read_text(encoding="utf-8").replace("images/", ""))
    message = fails(
        workdir,
        "train.csv: 18 of 18 image files not found (e.g. '0.jpg' as ",
        "test.csv: 4 of 4 image files not found",
        "set data.train_images: images and data.test_images: images (the submission keeps",
    )
    assert message.count("\n") < 4  # one line a table, not a line per image
    write_params(workdir, train_images="images", test_images="images")
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert list(test["image"]) == [image.removeprefix("images/") for image in comp.test]
    check_consistent(workdir, classes, train, test)


def test_aptos_layout_ids_without_their_suffix_get_the_settings_that_find_them(workdir, comp):
    # APTOS: train_images/<id>.png and test_images/<id>.png, the tables holding bare ids.
    (comp.root / "train_images").mkdir()
    (comp.root / "test_images").mkdir()
    trains = [image for image, _ in comp.train]
    for folder, images in (("train_images", trains), ("test_images", comp.test)):
        for image in images:
            (comp.root / image).rename(comp.root / folder / f"{Path(image).stem}.png")
    imgs.write_csv(comp.train_csv, ["image", "label"], [(i[7:-4], c) for i, c in comp.train])
    ids = [image[7:-4] for image in comp.test]
    imgs.write_csv(comp.test_csv, ["image"], [[i] for i in ids])
    imgs.write_csv(comp.sample_csv, ["image", "label"], [[i, "x"] for i in ids])
    fails(
        workdir,
        "18 of 18 image files not found",
        "set data.train_images: train_images and data.test_images: test_images and "
        "data.image_suffix: .png (the submission keeps the cells as written)",
    )
    write_params(
        workdir, train_images="train_images", test_images="test_images", image_suffix=".png"
    )
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert list(test["image"]) == ids
    assert train["path"][0].endswith("comp/train_images/0.png")
    check_consistent(workdir, classes, train, test)


def split_into(comp, folders: tuple[str, str], names=lambda image: image[7:]) -> None:
    """Move the training and test images into two folders of the root, the cells bare."""
    trains = [image for image, _ in comp.train]
    for folder, images in zip(folders, (trains, comp.test), strict=True):
        (comp.root / folder).mkdir(parents=True)
        for image in images:
            (comp.root / image).rename(comp.root / folder / names(image))
    imgs.write_csv(comp.train_csv, ["image", "label"], [(i[7:], c) for i, c in comp.train])
    imgs.write_csv(comp.test_csv, ["image"], [[i[7:]] for i in comp.test])
    imgs.write_csv(comp.sample_csv, ["image", "label"], [[i[7:], "x"] for i in comp.test])


def test_the_folder_advised_is_the_one_holding_most_of_the_tables_images(workdir, comp):
    # Both folders numbered from 0: test/ holds some training names too, and sorts first.
    split_into(comp, ("train", "test"), names=lambda image: f"{int(image[7:-4]) % 18}.jpg")
    imgs.write_csv(
        comp.train_csv, ["image", "label"], [(f"{i}.jpg", c) for i, (_, c) in enumerate(comp.train)]
    )
    tests = [f"{i}.jpg" for i in range(len(comp.test))]
    imgs.write_csv(comp.test_csv, ["image"], [[i] for i in tests])
    imgs.write_csv(comp.sample_csv, ["image", "label"], [[i, "x"] for i in tests])
    fails(workdir, "set data.train_images: train and data.test_images: test (the submission")
    # Rightly set, with one training file gone and test/ holding every training name: that
    # file is named, no folder is advised.
    write_params(workdir, train_images="train", test_images="test")
    for k in range(18):
        imgs.write_jpeg(comp.root / "test" / f"{k}.jpg", index=200 + k)
    (comp.root / "train" / "1.jpg").unlink()
    message = fails(workdir, "1.jpg: image file not found")
    assert "data.train_images" not in message


def test_a_nested_folder_is_found(workdir, comp):
    split_into(comp, ("train_images/train_images", "test_images/test_images"))
    fails(
        workdir,
        "set data.train_images: train_images/train_images and "
        "data.test_images: test_images/test_images (the submission",
    )


def test_tables_whose_files_end_differently_are_told_one_suffix_serves_both(workdir, comp):
    for image, _ in comp.train:
        (comp.root / image).rename((comp.root / image).with_suffix(".png"))
    for table in (comp.train_csv, comp.test_csv, comp.sample_csv):
        table.write_text(table.read_text(encoding="utf-8").replace(".jpg", ""))
    message = fails(
        workdir,
        "\nthe training and test files end in different suffixes ('.png', '.jpg'), and "
        "data.image_suffix is one for both",
    )
    assert "set data" not in message


def test_cells_with_windows_separators_are_found_and_advised_alike(workdir, comp):
    # Tables written on Windows, without the suffix: images\0 for images/0.jpg.
    for table in (comp.train_csv, comp.test_csv, comp.sample_csv):
        text = table.read_text(encoding="utf-8")
        table.write_text(text.replace("images/", "images\\").replace(".jpg", ""))
    fails(workdir, "set data.image_suffix: .jpg (the submission keeps the cells as written)")
    write_params(workdir, image_suffix=".jpg")
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert test["image"][0] == "images\\" + comp.test[0][7:-4]
    assert test["path"][0].endswith(f"comp/{comp.test[0]}")
    check_consistent(workdir, classes, train, test)


def test_cassavas_layout_images_in_folders_of_their_own_and_no_test_csv(workdir, comp):
    # train_images/ and test_images/ (the same bare name in both), numbered labels, and the
    # test images listed by the sample submission alone.
    (comp.root / "images").rename(comp.root / "train_images")
    (comp.root / "test_images").mkdir()
    tests = ["0.jpg", *(image.removeprefix("images/") for image in comp.test[1:])]
    for i, image in enumerate(tests):
        imgs.write_jpeg(comp.root / "test_images" / image, index=100 + i)
    rows = [(image[7:], str(comp.classes.index(label))) for image, label in comp.train]
    imgs.write_csv(comp.train_csv, ["image_id", "label"], rows)
    comp.test_csv.unlink()
    imgs.write_csv(comp.sample_csv, ["image_id", "label"], [[image, "4"] for image in tests])
    write_params(workdir, image_col="image_id")
    fails(workdir, "test.csv", "set data.test_csv: sample_submission.csv")
    write_params(
        workdir,
        image_col="image_id",
        test_csv="sample_submission.csv",
        train_images="train_images",
        test_images="test_images",
    )
    prepare_stage.main([])
    classes, train, test = read_prepared(workdir)
    assert list(test["image"]) == tests
    assert test["path"][0].endswith("comp/test_images/0.jpg")
    assert train["path"][0].endswith("comp/train_images/0.jpg")
    check_consistent(workdir, classes, train, test)
