"""Image preprocessing of the official L2T-ww code, as pure TensorFlow functions.

Each function maps one HWC image to one HWC image and can run inside
`tf.data.Dataset.map`. Augmentations take a `seed` (shape [2] integer tensor) and
use stateless random ops, so a pipeline that feeds them seeds from
`tf.data.Dataset.random(seed)` is deterministic. Geometry functions return float32
in [0, 255]; `normalize` then applies the ImageNet statistics, which the official
code uses for every dataset, CIFAR included (method.md §1.3, §4.4).
"""

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


def imagenet_train(image, size=224, seed=None, antialias=True):
    """RandomResizedCrop(size, scale 0.08-1, ratio 3/4-4/3) and a random horizontal flip.

    The crop box comes from `stateless_sample_distorted_bounding_box` with 10
    attempts; when all fail the whole image is used (torchvision would take a
    centre crop). Resizing is bilinear with antialiasing, as PIL does;
    `antialias=False` is about twice as fast on CPU but aliases when shrinking.
    """
    crop_seed, flip_seed = tf.unstack(_seeds(seed, 2))
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=crop_seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    resized = tf.image.resize(crop, [size, size], method="bilinear", antialias=antialias)
    flipped = tf.image.stateless_random_flip_left_right(resized, flip_seed)
    return tf.ensure_shape(flipped, [size, size, 3])


def imagenet_eval(image, size=224):
    """Resize the shorter side to round(size * 256 / 224), then centre-crop size x size.

    Follows torchvision `Resize(256)` (longer side truncated) and `CenterCrop(224)`
    (offsets rounded half to even), with antialiasing like PIL's bilinear.
    """
    short_side = round(size * 256 / 224)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
    scale = short_side / tf.minimum(height, width)
    new_height = tf.where(height <= width, short_side, tf.cast(tf.floor(height * scale), tf.int32))
    new_width = tf.where(width < height, short_side, tf.cast(tf.floor(width * scale), tf.int32))
    resized = tf.image.resize(image, tf.stack([new_height, new_width]), method="bilinear", antialias=True)
    top = tf.cast(tf.round(tf.cast(new_height - size, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(new_width - size, tf.float32) / 2), tf.int32)
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
