"""classifier.images' one table of formats and one folder walker, which uploads, training,
the batch CLI, feedback and the form all use."""
from __future__ import annotations

import io

import pytest
from PIL import Image

from classifier.image_files import (
    FORMAT_NAMES,
    FORMATS,
    IMAGE_EXTENSIONS,
    find_image_files,
    image_format,
)
from classifier.images import open_checked
from harness.images import encode, photo
from tests.conftest import ROOT


@pytest.mark.parametrize("row", FORMATS, ids=lambda row: row.name)
def test_each_format_is_read_named_and_found_by_its_suffix(row, tmp_path):
    data = encode(photo(), row.pillow)
    assert open_checked(data).size == (64, 48)
    assert image_format(Image.open(io.BytesIO(data)).format) is row
    assert row.mime.startswith("image/") and set(row.suffixes) <= IMAGE_EXTENSIONS
    for suffix in row.suffixes:
        (tmp_path / f"photo{suffix.upper()}").write_bytes(data)
    assert len(find_image_files(tmp_path)) == len(row.suffixes)


def test_a_phones_multi_picture_jpeg_is_a_jpeg():
    assert image_format("MPO") is image_format("JPEG")
    assert image_format("EPS") is None and image_format(None) is None


def test_the_docs_list_the_formats_of_the_table():
    listed = FORMAT_NAMES.replace(" or ", " and ")
    assert listed in (ROOT / "README.md").read_text()


def test_the_walker_lists_images_sorted_skipping_hidden_and_following_links(tmp_path):
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    for path in ("a.png", "B.JPG", "notes.txt", "noext", "sub/c.webp", "sub/.d.png",
                 ".cache/e.png"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"x")
    elsewhere.mkdir()
    (elsewhere / "f.heic").write_bytes(b"x")
    (root / "linked").symlink_to(elsewhere)
    (root / "sub" / "loop").symlink_to(root)  # walked once, not forever
    relative = [p.relative_to(root).as_posix() for p in find_image_files(root)]
    assert relative == ["B.JPG", "a.png", "linked/f.heic", "sub/c.webp"]
    every = [p.relative_to(root).as_posix() for p in find_image_files(root, every_file=True)]
    assert every == ["B.JPG", "a.png", "linked/f.heic", "noext", "notes.txt", "sub/c.webp"]
    assert find_image_files(tmp_path / "missing") == []
