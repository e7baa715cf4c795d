"""Grids, image files and zip archives of generated images."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

from ddpmlab.export import animation_frame, grid_image, save_animation, save_grid, save_images, save_zip


def _images(n=6, h=5, w=4, c=1):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)


def test_grid_places_images_row_by_row():
    images = _images(6)
    grid = grid_image(images, rows=2, padding=1)
    assert grid.shape == (2 * 6 + 1, 3 * 5 + 1, 1)
    # image 4 (second row, second column) sits at row 1 + 1*(5+1), column 1 + 1*(4+1)
    np.testing.assert_array_equal(grid[7:12, 6:10], images[4])
    assert (grid[0] == 255).all()  # padding is white


def test_files_and_zip_hold_the_exact_images(tmp_path):
    images = _images(64, c=3)
    labels = list(range(10)) * 6 + [0, 1, 2, 3]
    zip_path = save_zip(images, tmp_path / "HW2_123456789.zip", "png", labels)
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert len(names) == 64 and names[0] == "000_0.png" and all(n.endswith(".png") for n in names)
        with archive.open(names[5]) as handle:
            np.testing.assert_array_equal(np.asarray(Image.open(handle)), images[5])  # PNG is lossless
    paths = save_images(images[:3], tmp_path / "dir", "jpg")
    assert [p.name for p in paths] == ["000.jpg", "001.jpg", "002.jpg"]
    assert Image.open(paths[0]).size == (4, 5)


def test_grid_file_and_scale(tmp_path):
    path = save_grid(_images(4), tmp_path / "g.png", rows=2, scale=3)
    assert Image.open(path).size == (3 * (2 * 6 + 2), 3 * (2 * 7 + 2))


@pytest.mark.parametrize("call, message", [
    (lambda p: save_zip(_images(2), p / "x.tar"), "must end in .zip"),
    (lambda p: save_zip(_images(2), p / "x.zip", "gif"), "unknown image format"),
    (lambda p: grid_image(np.zeros((2, 3, 3, 1), dtype=np.float32)), "expected uint8"),
])
def test_bad_requests(tmp_path, call, message):
    with pytest.raises(ValueError, match=message):
        call(tmp_path)


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_animation_frames_show_both_grids_and_the_gif_keeps_them(tmp_path, channels, mode):
    rng = np.random.default_rng(0)
    x_t = rng.integers(0, 256, (4, 8, 8, channels), dtype=np.uint8)
    x0 = np.zeros_like(x_t)
    frame = animation_frame(x_t, x0, "step 1/2, t = 500", rows=2, scale=2)
    grid = grid_image(x_t, rows=2)  # 2 x 2 images of 8 pixels with 2-pixel padding: 22 x 22
    assert frame.mode == mode and frame.size == (2 * 2 * grid.shape[1] + 8, 2 * grid.shape[0] + 30)
    # the right grid (x0) is black where the images are, the left one (x_t) is not
    pixels = np.asarray(frame.convert("L"))
    left, right = pixels[30 + 4 : 30 + 20, 4:20], pixels[30 + 4 : 30 + 20, 2 * 22 + 8 + 4 : 2 * 22 + 8 + 20]
    assert right.max() == 0 and left.std() > 30
    last = animation_frame(x0, x0, "the sample", 2, 2)
    path = save_animation([frame, frame.copy(), last], tmp_path / "a.gif")
    with Image.open(path) as gif:
        # the GIF writer merges identical consecutive frames, adding up their durations
        assert gif.n_frames == 2 and gif.info["loop"] == 0 and gif.info["duration"] == 200
        gif.seek(1)
        assert gif.info["duration"] == 2000  # the last frame, held 2 s
    with pytest.raises(ValueError, match="at least one frame"):
        save_animation([], tmp_path / "b.gif")
