"""Image preprocessing of the official L2T-ww code, as pure TensorFlow functions.

Each function maps one HWC image to one HWC image and can run inside
`tf.data.Dataset.map`. Augmentations take a `seed` (shape [2] integer tensor) and
use stateless random ops, so a pipeline that feeds them seeds from
`tf.data.Dataset.random(seed)` is deterministic. Geometry functions return float32
in [0, 255]; `normalize` then applies the ImageNet statistics, which the official
code uses for every dataset, CIFAR included (docs/method.md §1.3, §4.4).
"""

import math

import tensorflow as tf

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Zero padding before the random crop of the 32x32 pipelines (torchvision Pad(4)).
CIFAR_PADDING = 4


def normalize(image):
    """Scale to [0, 1] and standardise with the ImageNet mean and std (float32)."""
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(IMAGENET_MEAN)) / tf.constant(IMAGENET_STD)


def to_three_channels(image):
    """Repeat a single (grayscale) channel three times; 3-channel images pass through."""
    channels = image.shape[-1]
    if channels == 3:
        return image
    if channels == 1:
        return tf.repeat(image, 3, axis=-1)
    if channels is None:
        return tf.cond(
            tf.shape(image)[-1] == 1, lambda: tf.repeat(image, 3, axis=-1), lambda: image[..., :3]
        )
    raise ValueError(f"Expected 1 or 3 channels, got shape {image.shape}.")


def _seeds(seed, num):
    """`num` independent stateless seeds from one (a fresh random one if None)."""
    if seed is None:
        seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)


def resize(image, size):
    """Bilinear (antialiased) resize to size x size; a no-op cast if already that size."""
    if image.shape[0] == size and image.shape[1] == size:
        return tf.cast(image, tf.float32)
    resized = tf.image.resize(image, [size, size], method="bilinear", antialias=True)
    return tf.ensure_shape(resized, [size, size, image.shape[-1]])


# torchvision RandomResizedCrop's defaults: area fraction, aspect ratio (w / h), attempts.
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10


def random_resized_crop_box(height, width, seed, scale=CROP_SCALE, ratio=CROP_RATIO, attempts=CROP_ATTEMPTS):
    """(top, left, crop height, crop width) by torchvision `RandomResizedCrop.get_params`' rule.

    Each attempt draws an area fraction uniform in `scale` and an aspect ratio
    log-uniform in `ratio`, with w = round(sqrt(area * ratio)) and
    h = round(sqrt(area / ratio)) (half to even, as Python's round); the first
    attempt with 0 < w <= width and 0 < h <= height wins, its top-left corner
    uniform over the valid positions. If all fail: the whole image with its
    ratio clamped to `ratio`, centred. The attempts are drawn at once (graph mode).
    """
    area_seed, ratio_seed, top_seed, left_seed = tf.unstack(_seeds(seed, 4))
    height, width = tf.cast(height, tf.int32), tf.cast(width, tf.int32)
    h_f, w_f = tf.cast(height, tf.float64), tf.cast(width, tf.float64)
    area = h_f * w_f * tf.random.stateless_uniform([attempts], area_seed, scale[0], scale[1], tf.float64)
    log_ratio = tf.random.stateless_uniform(
        [attempts], ratio_seed, math.log(ratio[0]), math.log(ratio[1]), tf.float64
    )
    aspect = tf.exp(log_ratio)
    w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    valid = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)  # 0 if none is valid

    in_ratio = w_f / h_f
    fallback_w = tf.where(in_ratio > ratio[1], tf.cast(tf.round(h_f * ratio[1]), tf.int32), width)
    fallback_h = tf.where(in_ratio < ratio[0], tf.cast(tf.round(w_f / ratio[0]), tf.int32), height)
    found = tf.reduce_any(valid)
    crop_h = tf.where(found, h[first], fallback_h)
    crop_w = tf.where(found, w[first], fallback_w)
    top = tf.random.stateless_uniform([], top_seed, 0, height - crop_h + 1, tf.int32)
    left = tf.random.stateless_uniform([], left_seed, 0, width - crop_w + 1, tf.int32)
    top = tf.where(found, top, (height - crop_h) // 2)
    left = tf.where(found, left, (width - crop_w) // 2)
    return top, left, crop_h, crop_w


def imagenet_train(image, size=224, seed=None, antialias=True):
    """RandomResizedCrop(size) as torchvision samples it, bilinear resize, random horizontal flip.

    The crop box follows `random_resized_crop_box`. Resizing is bilinear with
    antialiasing, as PIL does; `antialias=False` is about twice as fast on CPU
    but aliases when shrinking.
    """
    crop_seed, flip_seed = tf.unstack(_seeds(seed, 2))
    shape = tf.shape(image)
    top, left, crop_h, crop_w = random_resized_crop_box(shape[0], shape[1], crop_seed)
    crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([crop_h, crop_w, -1]))
    resized = tf.image.resize(crop, [size, size], method="bilinear", antialias=antialias)
    flipped = tf.image.stateless_random_flip_left_right(resized, flip_seed)
    return tf.ensure_shape(flipped, [size, size, 3])


def eval_short_side(size):
    """Shorter side before the centre crop: 256 for 224 crops (torchvision `Resize(256)`), scaled for other sizes."""
    return round(size * 256 / 224)


def resized_shape(height, width, short_side):
    """(new height, new width) of torchvision `Resize(short_side)`, elementwise on int tensors.

    The shorter side (the width when the two are equal) becomes `short_side` and
    the longer one `int(short_side * long / short)`. The floor is taken in exact
    integer arithmetic: a float scale factor first (`long * (short_side / short)`)
    truncates 374 x 374 to 256 x 255, and the integer floor equals torchvision's
    float expression for every size (tests/test_data_references.py checks sides
    up to 4,000).
    """
    height, width = tf.cast(height, tf.int64), tf.cast(width, tf.int64)
    short_side = tf.cast(short_side, tf.int64)
    width_is_short = width <= height
    short, long = tf.where(width_is_short, width, height), tf.where(width_is_short, height, width)
    new_long = short_side * long // short
    new_height = tf.where(width_is_short, new_long, short_side)
    new_width = tf.where(width_is_short, short_side, new_long)
    return tf.cast(new_height, tf.int32), tf.cast(new_width, tf.int32)


def center_crop_offsets(height, width, size):
    """(top, left) of torchvision `CenterCrop(size)`: int(round((side - size) / 2)), half to even, elementwise."""
    offsets = [tf.round(tf.cast(side - size, tf.float64) / 2.0) for side in (height, width)]
    return tuple(tf.cast(offset, tf.int32) for offset in offsets)


def imagenet_eval(image, size=224):
    """Resize the shorter side to `eval_short_side(size)`, then centre-crop size x size.

    Geometry of torchvision `Resize(256)` and `CenterCrop(224)` (`resized_shape`,
    `center_crop_offsets`); bilinear with antialiasing, like PIL's bilinear.
    """
    shape = tf.shape(image)
    new_height, new_width = resized_shape(shape[0], shape[1], eval_short_side(size))
    resized = tf.image.resize(image, tf.stack([new_height, new_width]), method="bilinear", antialias=True)
    top, left = center_crop_offsets(new_height, new_width, size)
    cropped = tf.slice(resized, tf.stack([top, left, 0]), [size, size, -1])
    return tf.ensure_shape(cropped, [size, size, 3])


def pad_crop_train(image, size=32, seed=None):
    """Zero-pad by 4 pixels and take a random size x size crop (digits, MNIST)."""
    image = resize(image, size)
    padded = tf.pad(image, [[CIFAR_PADDING, CIFAR_PADDING], [CIFAR_PADDING, CIFAR_PADDING], [0, 0]])
    crop_seed = _seeds(seed, 1)[0]
    cropped = tf.image.stateless_random_crop(padded, [size, size, 3], seed=crop_seed)
    return tf.ensure_shape(cropped, [size, size, 3])


def cifar_train(image, size=32, seed=None):
    """Zero-pad 4, random crop size x size, random horizontal flip (CIFAR, STL-10)."""
    crop_seed, flip_seed = tf.unstack(_seeds(seed, 2))
    cropped = pad_crop_train(image, size, crop_seed)
    return tf.image.stateless_random_flip_left_right(cropped, flip_seed)


def small_eval(image, size=32):
    """Evaluation transform of the 32x32 pipelines: resize to size x size only."""
    return resize(image, size)
