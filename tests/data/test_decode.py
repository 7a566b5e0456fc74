"""Decoding any poster file to RGB, refusing bad files with a clear reason, and resizing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from postergenre.data.decode import (
    decode_poster,
    input_box,
    resize_poster,
)
from postergenre.data.preprocess import UNIT_RANGE, InputSpec, load_poster_array
from postergenre.errors import PosterDecodeError, UserError

ORIENTATION = 0x0112  # the EXIF tag


def noise_jpeg(path, size=(64, 64)):
    """A JPEG of random pixels: it does not compress, so cutting it leaves a real truncation."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_plain_rgb_jpeg(tmp_path, save_image):
    path = save_image(tmp_path / "poster.jpg", (200, 40, 30), size=(6, 9))

    image = decode_poster(path)

    assert image.mode == "RGB"
    assert image.size == (6, 9)
    assert np.allclose(image.getpixel((3, 4)), (200, 40, 30), atol=3)


# --- modes and containers -----------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    # Stored 40 wide x 20 high: left half red, right half blue. Orientation 6 means "rotate
    # 90 degrees clockwise to display", so the poster is 20 wide x 40 high, red on top.
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", exif=exif, quality=95)

    image = decode_poster(tmp_path / "rotated.jpg")

    assert image.size == (20, 40)
    top, bottom = np.asarray(image)[5, 10], np.asarray(image)[35, 10]
    assert np.allclose(top, (255, 0, 0), atol=8)
    assert np.allclose(bottom, (0, 0, 255), atol=8)


def test_palette_image(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.save(tmp_path / "palette.png")

    decoded = decode_poster(tmp_path / "palette.png")

    assert decoded.mode == "RGB"
    assert decoded.getpixel((2, 2)) == (0, 255, 0)


def test_palette_transparency_becomes_white(tmp_path):
    image = Image.new("P", (4, 4), 0)  # index 0, declared transparent below
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    image.save(tmp_path / "palette.png", transparency=0)

    decoded = decode_poster(tmp_path / "palette.png")

    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((1, 1)) == (0, 255, 0)


def test_cmyk_jpeg(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg")  # pure red

    decoded = decode_poster(tmp_path / "cmyk.jpg")

    assert decoded.mode == "RGB"
    assert np.allclose(decoded.getpixel((4, 4)), (255, 0, 0), atol=3)


def test_grayscale(tmp_path):
    Image.new("L", (5, 7), 90).save(tmp_path / "gray.png")

    decoded = decode_poster(tmp_path / "gray.png")

    assert decoded.mode == "RGB"
    assert decoded.getpixel((2, 3)) == (90, 90, 90)


def test_rgba_transparent_pixels_become_white(tmp_path):
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent black
    image.putpixel((1, 1), (0, 255, 0, 255))
    image.putpixel((2, 2), (0, 0, 0, 128))  # half-transparent black over white
    image.save(tmp_path / "alpha.png")

    decoded = decode_poster(tmp_path / "alpha.png")

    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (255, 255, 255)
    assert decoded.getpixel((1, 1)) == (0, 255, 0)
    assert np.allclose(decoded.getpixel((2, 2)), (127, 127, 127), atol=2)


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"

    decoded = np.asarray(decode_poster(tmp_path / "deep.png"))

    assert decoded.dtype == np.uint8 and decoded.shape == (1, 4, 3)
    gray = decoded[0, :, 0]
    assert gray[0] == 0
    assert gray[1] <= 4  # 1000 / 65535 of full scale: nearly black, not clipped to 255
    assert abs(int(gray[2]) - 128) <= 1
    assert gray[3] == 255


def test_animated_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2

    decoded = decode_poster(tmp_path / "anim.gif")

    assert decoded.mode == "RGB"
    assert decoded.getpixel((4, 4)) == (255, 0, 0)


# --- files that are not usable posters ----------------------------------------------------


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")

    with pytest.raises(PosterDecodeError, match=r"empty file \(0 bytes\)"):
        decode_poster(tmp_path / "empty.jpg")


def test_truncated_jpeg(tmp_path):
    whole = noise_jpeg(tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "half.jpg").write_bytes(whole[: len(whole) // 2])

    with pytest.raises(PosterDecodeError, match="truncated"):
        decode_poster(tmp_path / "half.jpg")


def test_corrupt_bytes_named_jpg(tmp_path):
    (tmp_path / "corrupt.jpg").write_bytes(bytes(range(256)) * 4)

    with pytest.raises(PosterDecodeError, match=r"not an image \(accepted formats"):
        decode_poster(tmp_path / "corrupt.jpg")


def test_text_file_named_png(tmp_path):
    (tmp_path / "poster.png").write_text("<html>404 Not Found</html>")

    with pytest.raises(PosterDecodeError, match=r"not an image \(accepted formats"):
        decode_poster(tmp_path / "poster.png")


def test_decompression_bomb(tmp_path):
    path = noise_jpeg(tmp_path / "big.jpg", size=(20, 10))

    with pytest.raises(PosterDecodeError, match="decompression bomb") as error:
        decode_poster(path, max_pixels=199)
    assert "20x10" in str(error.value)
    assert decode_poster(path, max_pixels=200).size == (20, 10)  # at the limit is fine


def test_missing_file(tmp_path):
    with pytest.raises(PosterDecodeError, match="file not found"):
        decode_poster(tmp_path / "nope.jpg")


def test_directory(tmp_path):
    folder = tmp_path / "poster.jpg"
    folder.mkdir()
    (folder / "inside.txt").write_text("x")  # a non-empty folder has a non-zero size anywhere

    with pytest.raises(PosterDecodeError, match=r"(?i)is a directory"):
        decode_poster(folder)


def test_directory_is_not_called_a_corrupt_image(tmp_path):
    folder = tmp_path / "poster.jpg"
    folder.mkdir()
    (folder / "inside.txt").write_text("x")

    with pytest.raises(PosterDecodeError) as error:
        decode_poster(folder)
    assert "corrupt" not in str(error.value)


def test_decode_errors_are_user_errors_and_name_the_file(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")

    with pytest.raises(UserError, match=r"empty\.png"):
        decode_poster(tmp_path / "empty.png")


# --- resizing -----------------------------------------------------------------------------


def three_stripes(width=30, height=10):
    """Left third red, middle third green, right third blue."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 3] = (255, 0, 0)
    pixels[:, width // 3 : 2 * width // 3] = (0, 255, 0)
    pixels[:, 2 * width // 3 :] = (0, 0, 255)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_resize_gives_exact_height_width_3_uint8(mode):
    out = resize_poster(three_stripes(), width=12, height=18, mode=mode)

    assert out.shape == (18, 12, 3)
    assert out.dtype == np.uint8


def test_squash_keeps_all_content():
    out = resize_poster(three_stripes(), width=9, height=9, mode="squash")

    assert tuple(out[4, 0]) == (255, 0, 0) and tuple(out[4, -1]) == (0, 0, 255)


def test_crop_keeps_the_centre():
    out = resize_poster(three_stripes(), width=10, height=10, mode="crop")

    assert (out == (0, 255, 0)).all()


def test_pad_letterboxes_on_black():
    square = Image.new("RGB", (10, 10), (255, 255, 255))

    out = resize_poster(square, width=10, height=20, mode="pad")

    assert (out[:5] == 0).all() and (out[-5:] == 0).all()  # bars above and below
    assert (out[5:15] == 255).all()


def test_unknown_resize_mode():
    with pytest.raises(ValueError, match="unknown resize mode 'stretch'"):
        resize_poster(three_stripes(), 10, 10, mode="stretch")
    with pytest.raises(ValueError, match="unknown resize mode 'stretch'"):
        input_box((30, 10), 10, 10, mode="stretch")


SIZES = [((30, 10), (10, 10)), ((10, 30), (12, 18)), ((101, 150), (20, 20)), ((64, 96), (32, 48))]


@pytest.mark.parametrize(("poster", "target"), SIZES)
def test_input_box_of_a_crop_is_the_part_the_crop_resizes(poster, target):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (poster[1], poster[0], 3), dtype=np.uint8))
    box = input_box(poster, *target, mode="crop")

    by_box = image.resize(target, Image.Resampling.BILINEAR, box=box)

    assert np.array_equal(np.asarray(by_box), resize_poster(image, *target, mode="crop"))
    assert input_box(poster, *target) == (0, 0, *poster)  # squash: the whole poster


@pytest.mark.parametrize(("poster", "target"), SIZES)
def test_input_box_of_a_pad_places_the_poster_where_the_pad_puts_it(poster, target):
    out = resize_poster(Image.new("RGB", poster, (255, 255, 255)), *target, mode="pad")
    left, top, right, bottom = input_box(poster, *target, mode="pad")

    # The poster's edges (0 and its size) in input pixels; everything between is poster.
    cols = [round((edge - left) / (right - left) * target[0]) for edge in (0, poster[0])]
    rows = [round((edge - top) / (bottom - top) * target[1]) for edge in (0, poster[1])]
    inside = np.zeros(out.shape[:2], dtype=bool)
    inside[rows[0] : rows[1], cols[0] : cols[1]] = True
    assert (out[inside] == 255).all() and (out[~inside] == 0).all()


def test_load_poster_array_decodes_and_resizes(tmp_path, save_image):
    path = save_image(tmp_path / "p.png", (10, 20, 30), size=(40, 60))

    out = load_poster_array(path, InputSpec(8, 12, "squash", UNIT_RANGE))

    assert out.shape == (12, 8, 3)
    assert (out == (10, 20, 30)).all()


# --- large posters are decoded reduced --------------------------------------------------------

FIT = (224, 336)
FIT_SPEC = InputSpec(*FIT, "squash", UNIT_RANGE)


def big_poster(path, size=(4912, 7360)):
    """A 36-megapixel poster: flat colour with a disc, quick to write and to compress."""
    image = Image.new("RGB", size, (200, 40, 30))
    ImageDraw.Draw(image).ellipse(
        (size[0] // 10, size[1] // 10, size[0] // 1.2, size[1] // 1.2), fill=(20, 200, 90)
    )
    image.save(path, quality=90)
    return path


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_poster_of_ordinary_size_decodes_bit_for_bit_with_a_fit(tmp_path, suffix):
    path = tmp_path / f"poster{suffix}"
    Image.open(noise_jpeg(tmp_path / "noise.jpg", size=(1300, 2000))).save(path)
    full = decode_poster(path)
    assert np.array_equal(np.asarray(decode_poster(path, fit=FIT)), np.asarray(full))
    assert np.array_equal(load_poster_array(path, FIT_SPEC), resize_poster(full, *FIT))


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_a_huge_poster_is_decoded_reduced_to_no_less_than_twice_the_input(tmp_path, suffix):
    path = big_poster(tmp_path / f"big{suffix}", size=(2700, 4050))
    reduced = decode_poster(path, fit=FIT)
    assert 2 * max(FIT) <= min(reduced.size) and reduced.size[0] <= 2700 // 2
    assert reduced.size[1] / reduced.size[0] == pytest.approx(1.5, abs=0.01)
    full = resize_poster(decode_poster(path), *FIT).astype(int)
    assert np.abs(load_poster_array(path, FIT_SPEC).astype(int) - full).mean() < 2.0


def test_decoding_a_36_megapixel_jpeg_takes_a_fraction_of_its_full_size(tmp_path):
    import subprocess
    import sys

    path = big_poster(tmp_path / "big.jpg")
    script = (
        "import resource, sys\n"
        "from postergenre.data.preprocess import UNIT_RANGE, InputSpec, load_poster_array\n"
        "spec = InputSpec(224, 336, 'squash', UNIT_RANGE)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "load_poster_array(sys.argv[1], spec)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    grown_mb = int(out.stdout) / 1024
    assert grown_mb < 60, f"{grown_mb:.0f} MB (the full image alone is 108 MB)"
