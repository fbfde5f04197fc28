"""Reading images and masks: formats, palettes and every unreadable-file error."""

import cv2
import numpy as np
import pytest
from PIL import Image

from segkit.data.io import (
    DataNotFoundError,
    image_size,
    read_image,
    read_mask,
    read_resized,
    require_dir,
    write_image,
    write_mask,
)
from segkit.errors import DataError


def _rgb(h=24, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_read_image_is_rgb_uint8(tmp_path):
    image = _rgb()
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), image[..., ::-1])  # OpenCV writes BGR
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out, image)


def test_read_image_greyscale_becomes_three_channels(tmp_path):
    grey = _rgb()[..., 0]
    cv2.imwrite(str(tmp_path / "g.png"), grey)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (24, 32, 3)
    np.testing.assert_array_equal(out[..., 1], grey)


def test_write_image_round_trip_png(tmp_path):
    image = _rgb()
    write_image(tmp_path / "x.png", image)
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), image)
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed away


@pytest.mark.parametrize(
    "damage", ["missing", "empty", "garbage", "truncated_jpeg", "truncated_png"]
)
def test_bad_image_files_name_the_path(tmp_path, damage):
    path = tmp_path / ("img.png" if damage == "truncated_png" else "img.jpg")
    if damage != "missing":
        ext = ".png" if damage == "truncated_png" else ".jpg"
        data = cv2.imencode(ext, _rgb(64, 64))[1].tobytes()
        content = {
            "empty": b"",
            "garbage": b"this is not an image",
            "truncated_jpeg": data[: len(data) * 2 // 3],
            "truncated_png": data[: len(data) // 2],
        }[damage]
        path.write_bytes(content)
    error = DataNotFoundError if damage == "missing" else DataError
    with pytest.raises(error, match="img"):
        read_image(path)


def test_truncated_jpeg_is_caught_with_reduced_decoding(tmp_path):
    data = cv2.imencode(".jpg", _rgb(256, 256))[1].tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) - 200])  # header intact, end-of-image marker gone
    with pytest.raises(DataError, match="truncated"):
        read_image(path, cv2.IMREAD_REDUCED_COLOR_4)


def _with_app_segment(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with an APP15 segment holding ``payload`` right after SOI (as EXIF thumbnails)."""
    segment = b"\xff\xef" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def test_jpeg_with_data_after_the_end_marker_is_read(tmp_path):
    data = cv2.imencode(".jpg", _rgb(64, 64))[1].tobytes()
    plain, phone = tmp_path / "plain.jpg", tmp_path / "phone.jpg"
    plain.write_bytes(data)
    phone.write_bytes(data + b"TRAILER" * 1000)  # some cameras append 7 KB of metadata
    np.testing.assert_array_equal(read_image(phone), read_image(plain))


def test_truncated_jpeg_with_a_thumbnail_is_still_caught(tmp_path):
    thumbnail = cv2.imencode(".jpg", _rgb(16, 16))[1].tobytes()  # ends with its own FF D9
    data = _with_app_segment(cv2.imencode(".jpg", _rgb(256, 256))[1].tobytes(), thumbnail)
    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    whole.write_bytes(data)
    cut.write_bytes(data[: len(data) - 200])
    assert read_image(whole).shape == (256, 256, 3)
    with pytest.raises(DataError, match="truncated"):
        read_image(cut)


def test_missing_file_is_also_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_mask(tmp_path / "nope.png")


def test_read_mask_greyscale_png(tmp_path):
    mask = np.random.default_rng(1).integers(0, 11, (20, 30), dtype=np.uint8)
    write_mask(tmp_path / "m.png", mask)
    out = read_mask(tmp_path / "m.png")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, mask)


def test_read_mask_kaggle_palette_gif_gives_palette_grey(tmp_path):
    mask = np.zeros((10, 12), np.uint8)
    mask[2:6, 3:9] = 1
    im = Image.frombytes("P", (12, 10), mask.tobytes())
    im.putpalette([0, 0, 0, 255, 255, 255])
    im.save(tmp_path / "m.gif", optimize=False)
    out = read_mask(tmp_path / "m.gif")
    np.testing.assert_array_equal(out, mask * 255)  # black/white palette -> 0/255


def test_read_mask_gif_with_reordered_palette_keeps_meaning(tmp_path):
    # Pillow's default GIF writer stores an all-white mask as index 0 with a white palette entry
    im = Image.frombytes("P", (8, 6), np.ones((6, 8), np.uint8).tobytes())
    im.putpalette([0, 0, 0, 255, 255, 255])
    im.save(tmp_path / "white.gif")
    assert np.asarray(Image.open(tmp_path / "white.gif")).max() == 0  # the index lies
    assert (read_mask(tmp_path / "white.gif") == 255).all()  # the colour does not


def test_read_mask_coloured_palette_png_gives_indices(tmp_path):
    mask = np.array([[0, 1, 2], [2, 1, 0]], np.uint8)
    im = Image.frombytes("P", (3, 2), mask.tobytes())
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0])  # Pascal VOC colours
    im.save(tmp_path / "voc.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "voc.png"), mask)


def test_read_mask_equal_channel_rgb_is_accepted(tmp_path):
    mask = np.array([[0, 1], [3, 10]], np.uint8)
    cv2.imwrite(str(tmp_path / "m.png"), np.dstack([mask] * 3))
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), mask)


def test_read_mask_colour_label_image_is_an_error(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    cv2.imwrite(str(tmp_path / "colour.png"), rgb)
    with pytest.raises(DataError, match=r"colour\.png.*greyscale"):
        read_mask(tmp_path / "colour.png")


def test_read_mask_16_bit_values_above_255_is_an_error(tmp_path):
    mask = np.array([[0, 300]], np.uint16)
    cv2.imwrite(str(tmp_path / "deep.png"), mask)
    with pytest.raises(DataError, match="deep.png"):
        read_mask(tmp_path / "deep.png")
    cv2.imwrite(str(tmp_path / "small.png"), np.array([[0, 7]], np.uint16))
    np.testing.assert_array_equal(read_mask(tmp_path / "small.png"), [[0, 7]])


def test_truncated_gif_mask_is_an_error(tmp_path):
    im = Image.frombytes("P", (64, 64), (np.arange(64 * 64) % 2).astype(np.uint8).tobytes())
    im.putpalette([0, 0, 0, 255, 255, 255])
    im.save(tmp_path / "full.gif")
    data = (tmp_path / "full.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.gif"):
        read_mask(tmp_path / "cut.gif")


def test_write_mask_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="HxW"):
        write_mask(tmp_path / "a.png", np.zeros((2, 2, 3)))
    with pytest.raises(ValueError, match="0..255"):
        write_mask(tmp_path / "a.png", np.array([[0, 256]]))
    with pytest.raises(ValueError, match=".png"):
        write_mask(tmp_path / "a.jpg", np.zeros((2, 2), np.uint8))


def test_require_dir(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        require_dir(tmp_path / "missing")
    with pytest.raises(DataError, match="is empty"):
        require_dir(tmp_path)
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        require_dir(tmp_path / "f.txt")
    assert require_dir(tmp_path) == tmp_path


def test_exif_orientation_is_ignored(tmp_path):
    """Pixels come as stored, so they stay on the grid of their (EXIF-less) label map."""
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    Image.fromarray(_rgb(16, 40)).save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    assert Image.open(tmp_path / "rotated.jpg").getexif()[0x0112] == 6
    assert read_image(tmp_path / "rotated.jpg").shape == (16, 40, 3)
    assert read_image(tmp_path / "rotated.jpg", cv2.IMREAD_REDUCED_COLOR_2).shape == (8, 20, 3)


def test_image_size_reads_headers_beyond_pillows_decoding_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # as if 64x64 were a 179 Mpx image
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), _rgb(48, 64))
    assert image_size(path) == (64, 48)
    assert Image.MAX_IMAGE_PIXELS == 100  # the limit is back for everyone else


def test_mask_beyond_pillows_limit_says_how_to_read_it(tmp_path, monkeypatch):
    path = tmp_path / "big.gif"
    Image.fromarray(np.zeros((64, 64), np.uint8)).convert("P").save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(DataError, match=r"big.gif.*too large.*MAX_IMAGE_PIXELS"):
        read_mask(path)


@pytest.mark.parametrize("progressive", [False, True])
def test_read_resized_decodes_jpeg_reduced_with_header_size(tmp_path, progressive):
    image = cv2.GaussianBlur(_rgb(300, 410), (9, 9), 3)
    path = tmp_path / "a.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    small, original = read_resized(path, 64)
    assert small.shape == (64, 64, 3) and original == (300, 410)
    full = cv2.resize(read_image(path), (64, 64), interpolation=cv2.INTER_AREA)
    assert 0 < np.abs(small.astype(int) - full).mean() < 2.0  # reduced, yet close
    assert read_resized(path, 64, decode="full")[0].tolist() == full.tolist()
    as_is, original = read_resized(path, None)
    assert as_is.shape == (300, 410, 3) and original == (300, 410)


def test_read_resized_decodes_other_formats_in_full(tmp_path):
    path = tmp_path / "a.png"  # OpenCV's reduced modes would drop pixels here (aliasing)
    cv2.imwrite(str(path), _rgb(300, 410))
    small, original = read_resized(path, 64)
    full = cv2.resize(read_image(path), (64, 64), interpolation=cv2.INTER_AREA)
    assert original == (300, 410) and small.tolist() == full.tolist()


def test_write_image_checks_values_and_makes_folders(tmp_path):
    path = tmp_path / "new" / "a.png"
    write_image(path, np.full((4, 5, 3), 7, np.int64))  # integers in range: cast
    assert read_image(path).shape == (4, 5, 3) and read_image(path).max() == 7
    with pytest.raises(ValueError, match="values -1..300 do not fit 0..255"):
        write_image(path, np.array([[[-1, 0, 300]]]))
    with pytest.raises(ValueError, match="expected HxWx3"):
        write_image(path, np.zeros((4, 5, 4), np.uint8))
    with pytest.raises(ValueError, match=r"got float32 \(for a float image in 0..1"):
        write_image(path, np.zeros((4, 5, 3), np.float32))
