"""The data path against the authors' (torchvision + PIL): evaluation geometry and image decoding.

The references are pure-Python re-statements of torchvision's rules
(`transforms.functional._compute_resized_output_size`, `CenterCrop`,
`RandomResizedCrop.get_params`' fallback) and PIL itself
(`Image.open(f).convert("RGB")`, the official loaders' decoder), run on sizes and
images the tests generate.
"""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_l2t.data import pipeline, preprocessing

# Model input sides: the 224 setting and a small one (short side round(32 * 256 / 224) = 37).
IMAGE_SIZES = (224, 32)


def _torchvision_resized_size(height, width, size):
    """torchvision `Resize(size)` output (height, width) for an int size, as its Python source computes it."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    new_width, new_height = (new_short, new_long) if width <= height else (new_long, new_short)
    return new_height, new_width


def _torchvision_center_crop_offsets(height, width, size):
    """torchvision `CenterCrop(size)`: (crop_top, crop_left) = int(round((side - size) / 2.0))."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def _size_sweep(low, high):
    """Every (height, width) with both sides in [low, high], and a few large and very unequal ones."""
    sides = np.arange(low, high + 1)
    heights, widths = (grid.ravel() for grid in np.meshgrid(sides, sides, indexing="ij"))
    extra = np.array([(374, 374), (3000, 4000), (4000, 3000), (1, 4000), (4000, 1), (500, 375), (333, 500)])
    return np.concatenate([heights, extra[:, 0]]), np.concatenate([widths, extra[:, 1]])


def test_eval_short_side_is_torchvisions_resize_256_for_224_crops():
    assert preprocessing.eval_short_side(224) == 256
    assert preprocessing.eval_short_side(32) == 37


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
def test_eval_resize_output_sizes_match_torchvision(image_size):
    short_side = preprocessing.eval_short_side(image_size)
    heights, widths = _size_sweep(1, 400)
    new_heights, new_widths = (v.numpy() for v in preprocessing.resized_shape(heights, widths, short_side))
    pairs = zip(heights.tolist(), widths.tolist())
    expected = np.array([_torchvision_resized_size(h, w, short_side) for h, w in pairs])
    wrong = np.flatnonzero((new_heights != expected[:, 0]) | (new_widths != expected[:, 1]))
    examples = [(heights[i], widths[i], new_heights[i], new_widths[i], tuple(expected[i])) for i in wrong[:5]]
    assert not wrong.size, f"{wrong.size} sizes differ from torchvision (h, w, ours h, ours w, torchvision): {examples}"
    assert tuple(v.numpy() for v in preprocessing.resized_shape(374, 374, 256)) == (256, 256)


@pytest.mark.parametrize("short_side", [preprocessing.eval_short_side(s) for s in IMAGE_SIZES])
def test_integer_floor_equals_torchvisions_float_expression_up_to_4000(short_side):
    """`resized_shape` floors short_side * long // short; torchvision truncates the float quotient."""
    longs = np.arange(1, 4001, dtype=np.int64)
    for short in range(1, 4001):
        exact = short_side * longs // short
        as_float = np.floor(short_side * longs / np.float64(short)).astype(np.int64)  # IEEE division, as Python's
        assert np.array_equal(exact, as_float), f"short {short}: first long {longs[exact != as_float][0]}"


@pytest.mark.parametrize("image_size", IMAGE_SIZES)
def test_center_crop_offsets_match_torchvision(image_size):
    heights, widths = _size_sweep(image_size, image_size + 120)
    tops, lefts = (v.numpy() for v in preprocessing.center_crop_offsets(heights, widths, image_size))
    expected = np.array([_torchvision_center_crop_offsets(h, w, image_size) for h, w in zip(heights, widths)])
    np.testing.assert_array_equal(np.stack([tops, lefts], axis=1), expected)
    odd = image_size + 33  # (33) / 2 = 16.5: rounded half to even, as Python's round
    assert tuple(v.numpy() for v in preprocessing.center_crop_offsets(odd, odd + 2, image_size)) == (16, 18)


@pytest.mark.parametrize(
    "shape, image_size", [((374, 374), 224), ((300, 451), 224), ((451, 300), 224), ((50, 71), 32), ((29, 29), 32)]
)
def test_imagenet_eval_is_torchvisions_resize_then_center_crop(shape, image_size):
    rng = np.random.default_rng(shape[0])
    image = tf.constant(rng.integers(0, 256, shape + (3,), dtype=np.uint8))
    new_size = _torchvision_resized_size(*shape, preprocessing.eval_short_side(image_size))
    resized = tf.image.resize(image, new_size, method="bilinear", antialias=True).numpy()
    top, left = _torchvision_center_crop_offsets(*new_size, image_size)
    expected = resized[top : top + image_size, left : left + image_size]
    np.testing.assert_array_equal(preprocessing.imagenet_eval(image, image_size).numpy(), expected)


def _fallback_box(height, width, ratio=(3 / 4, 4 / 3)):
    """torchvision `RandomResizedCrop.get_params`' fallback when no attempt fits: (top, left, h, w)."""
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def test_random_resized_crop_falls_back_like_torchvision_where_no_attempt_fits():
    # A side of at most 40 next to one of 1000: any crop of >= 8 % of the area with
    # ratio in [3/4, 4/3] is longer than the short side, so all 10 attempts fail.
    shapes = [(s, 1000) for s in range(1, 41)] + [(1000, s) for s in range(1, 41)]
    for height, width in shapes:
        for seed in range(3):
            box = preprocessing.random_resized_crop_box(height, width, tf.constant([seed, 7], tf.int64))
            assert tuple(int(v) for v in box) == _fallback_box(height, width), (height, width)


# ------------------------------------------------------------------------------ decoding


def _photo_like(height, width, channels, seed):
    """Smooth random colours plus noise: compresses like a photograph, with chroma detail."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 4 + 2, width // 4 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), np.int16)
    noisy = np.clip(smooth + rng.integers(-20, 21, smooth.shape), 0, 255).astype(np.uint8)
    return noisy if channels == 3 else noisy[..., 0]


# (height, width, mode, quality, options): odd sizes exercise the chroma upsampling at the edges.
JPEG_CASES = [
    (17, 23, "RGB", 75, {"subsampling": 2}),  # 4:2:0, PIL's default
    (64, 48, "RGB", 95, {"subsampling": 2}),
    (101, 77, "RGB", 50, {"subsampling": 2}),
    (101, 77, "RGB", 90, {"subsampling": 1}),  # 4:2:2
    (240, 320, "RGB", 95, {"subsampling": 0}),  # 4:4:4
    (99, 131, "RGB", 85, {"subsampling": 2, "progressive": True}),
    (64, 48, "L", 75, {}),  # greyscale JPEG
    (101, 77, "L", 95, {}),
    (45, 61, "CMYK", 90, {}),
]


def _jpeg(height, width, mode, quality, options, seed=0):
    image = Image.fromarray(_photo_like(height, width, 1 if mode == "L" else 3, seed))
    buffer = io.BytesIO()
    (image.convert("CMYK") if mode == "CMYK" else image).save(buffer, "JPEG", quality=quality, **options)
    return buffer.getvalue()


def _pil_rgb(data):
    """What the official loaders read: PIL, converted to RGB."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("height, width, mode, quality, options", JPEG_CASES)
def test_jpeg_decoding_equals_pil(height, width, mode, quality, options):
    data = _jpeg(height, width, mode, quality, options)
    assert Image.open(io.BytesIO(data)).mode == mode
    decoded = pipeline.decode(tf.constant(data)).numpy()
    np.testing.assert_array_equal(decoded, _pil_rgb(data))


def test_tensorflows_default_jpeg_decoding_differs_from_pil():
    """Why the pipeline does not use `tf.io.decode_image` for JPEGs (the fast IDCT)."""
    data = _jpeg(101, 77, "RGB", 75, {"subsampling": 2})
    default = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    assert not np.array_equal(default, _pil_rgb(data))


def _lossless(fmt, mode):
    pixels = _photo_like(13, 17, 3, seed=5)
    image = {
        "RGB": lambda: Image.fromarray(pixels),
        "RGBA": lambda: Image.fromarray(np.dstack([pixels, pixels[..., :1]]), "RGBA"),
        "L": lambda: Image.fromarray(pixels[..., 0], "L"),
        "P": lambda: Image.fromarray(pixels).convert("P"),
    }[mode]()
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "fmt, mode", [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"), ("PNG", "P"), ("GIF", "RGB"), ("BMP", "RGB")]
)
def test_lossless_decoding_equals_pil(fmt, mode):
    data = _lossless(fmt, mode)
    np.testing.assert_array_equal(pipeline.decode(tf.constant(data)).numpy(), _pil_rgb(data))


def test_decoding_inside_tf_data_picks_the_decoder_per_image():
    """Graph mode (`Dataset.map`): JPEG and PNG bytes in one dataset, each decoded as PIL does."""
    encoded = [_jpeg(*JPEG_CASES[2]), _lossless("PNG", "RGB"), _jpeg(*JPEG_CASES[6])]
    decoded = list(tf.data.Dataset.from_tensor_slices(encoded).map(pipeline.decode).as_numpy_iterator())
    for image, data in zip(decoded, encoded):
        np.testing.assert_array_equal(image, _pil_rgb(data))
