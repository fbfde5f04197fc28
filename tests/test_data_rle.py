"""Kaggle RLE: hand-computed codes, a plain-Python reference, exact round trips, CSV files."""

import numpy as np
import pytest

from segkit.data.rle import read_rle_csv, rle_decode, rle_encode, write_rle_csv
from segkit.errors import DataError


def reference_encode(mask: np.ndarray) -> str:
    """Run-length code written the slow, obvious way (row-major, 1-indexed starts)."""
    out, start = [], None
    flat = [int(v != 0) for row in mask for v in row]
    for i, v in enumerate(flat + [0]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out += [start + 1, i - start]
            start = None
    return " ".join(map(str, out))


def test_hand_computed_code_is_row_major():
    mask = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    # flattened left-to-right, top-to-bottom: 0 1 1 1 0 0 -> one run from pixel 2, length 3
    assert rle_encode(mask) == "2 3"
    mask = np.array([[1, 0], [0, 1]], np.uint8)
    assert rle_encode(mask) == "1 1 4 1"
    np.testing.assert_array_equal(rle_decode("2 3", (2, 3)), [[0, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    "name", ["empty", "full", "first", "last", "first_and_last", "random_sparse", "random_dense"]
)
def test_round_trip(name):
    shape = (7, 13)
    mask = np.zeros(shape, np.uint8)
    rng = np.random.default_rng(3)
    if name == "full":
        mask[:] = 1
    elif name == "first":
        mask[0, 0] = 1
    elif name == "last":
        mask[-1, -1] = 1
    elif name == "first_and_last":
        mask[0, 0] = mask[-1, -1] = 1
    elif name.startswith("random"):
        mask = (rng.random(shape) < (0.1 if name.endswith("sparse") else 0.7)).astype(np.uint8)
    code = rle_encode(mask)
    assert code == reference_encode(mask)
    decoded = rle_decode(code, shape)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)


def test_edge_codes():
    assert rle_encode(np.zeros((3, 4))) == ""
    assert rle_encode(np.ones((3, 4))) == "1 12"
    last = np.zeros((3, 4))
    last[-1, -1] = 1
    assert rle_encode(last) == "12 1"
    assert rle_decode("", (2, 2)).sum() == 0
    assert rle_decode(float("nan"), (2, 2)).sum() == 0  # an empty cell read by pandas
    assert rle_decode(None, (2, 2)).sum() == 0


def test_many_random_masks_match_reference():
    rng = np.random.default_rng(0)
    for _ in range(30):
        shape = tuple(rng.integers(1, 20, 2))
        mask = (rng.random(shape) < rng.random()).astype(np.uint8)
        code = rle_encode(mask)
        assert code == reference_encode(mask)
        np.testing.assert_array_equal(rle_decode(code, shape), mask)


def test_nonzero_values_count_as_foreground():
    assert rle_encode(np.array([[0, 255, 3]])) == "2 2"


@pytest.mark.parametrize(
    "code, match",
    [("1 2 3", "odd"), ("a b", "integers"), ("0 2", "outside"), ("5 3", "outside")],
)
def test_decode_errors(code, match):
    with pytest.raises(ValueError, match=match):
        rle_decode(code, (2, 3))


def test_encode_needs_2d():
    with pytest.raises(ValueError, match="HxW"):
        rle_encode(np.zeros((2, 2, 2)))


def test_csv_round_trip(tmp_path):
    rows = {"a_01.jpg": "1 3 10 2", "b_02.jpg": ""}
    path = tmp_path / "sub" / "masks.csv"
    write_rle_csv(path, rows)
    assert path.read_text().splitlines()[0] == "img,rle_mask"
    assert read_rle_csv(path) == rows
    write_rle_csv(path, list(rows.items()))
    assert read_rle_csv(path) == rows


def test_csv_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_rle_csv(tmp_path / "none.csv")
    (tmp_path / "bad.csv").write_text("image,code\na,1 2\n")
    with pytest.raises(DataError, match="img,rle_mask"):
        read_rle_csv(tmp_path / "bad.csv")
    (tmp_path / "dup.csv").write_text("img,rle_mask\na,1 2\na,3 4\n")
    with pytest.raises(DataError, match="twice"):
        read_rle_csv(tmp_path / "dup.csv")
    with pytest.raises(ValueError, match="comma"):
        write_rle_csv(tmp_path / "x.csv", {"a,b": "1 1"})


@pytest.mark.parametrize("dtype", [bool, np.uint8, np.int64, np.float32])
def test_dtypes_and_single_pixels(dtype):
    for value, code in ((0, ""), (1, "1 1")):
        assert rle_encode(np.full((1, 1), value, dtype=dtype)) == code
    mask = np.array([[1, 1, 0], [0, 1, 1]], dtype=dtype)
    assert rle_encode(mask) == "1 2 5 2"
