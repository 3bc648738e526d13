"""tf.data assembly: selected examples -> batched, normalised training and eval sets.

Training: [decode + resize + cache, for small datasets] -> shuffle (reshuffled
every epoch) -> decode + augment + normalise (parallel, one stateless seed per
example from `tf.data.Dataset.random`) -> batch(drop_remainder=True) -> prefetch.
Evaluation: decode + eval transform + normalise -> batch -> prefetch, in a
deterministic order. Given the same seed, the training stream is reproducible.

Large datasets are shuffled as encoded bytes (decoding comes after the shuffle),
so the 10,000-example buffer of Stanford Dogs holds about 400 MB of JPEGs.
"""

import tensorflow as tf

from keras_l2t.data import preprocessing

# Shuffle buffer upper bound; smaller datasets are shuffled in full.
MAX_SHUFFLE_BUFFER = 10_000


def decode(image):
    """Raw example image (encoded bytes or uint8 array) -> uint8 HxWx3."""
    if image.dtype == tf.string:
        decoded = tf.io.decode_image(image, channels=3, expand_animations=False)
        return tf.ensure_shape(decoded, [None, None, 3])
    return preprocessing.to_three_channels(image)


def _deterministic(dataset):
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


def train_dataset(records, num_examples, *, prepare, augment, batch_size, seed, cache):
    """Shuffled, augmented, batched training set.

    Args:
        records: Dataset of (raw image, int32 label).
        num_examples: Number of records (sets the shuffle buffer).
        prepare: Deterministic raw image -> image (decode, maybe resize).
        augment: (image, seed [2]) -> float32 image in [0, 255].
        batch_size: Batch size; the last partial batch is dropped.
        seed: Seed of the shuffle and of the augmentation stream.
        cache: Cache prepared images in memory before shuffling (small datasets).
    """
    if cache:
        records = records.map(lambda x, y: (prepare(x), y), num_parallel_calls=tf.data.AUTOTUNE).cache()
        prepare = tf.identity
    shuffled = records.shuffle(
        max(1, min(num_examples, MAX_SHUFFLE_BUFFER)), seed=seed, reshuffle_each_iteration=True
    )
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def transform(example, example_seed):
        image, label = example
        return preprocessing.normalize(augment(prepare(image), example_seed)), label

    augmented = tf.data.Dataset.zip((shuffled, seeds)).map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    batched = augmented.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return _deterministic(batched)


def eval_dataset(records, *, prepare, transform, batch_size, cache):
    """Batched evaluation set in a fixed order (no shuffling, last batch kept).

    Args:
        records: Dataset of (raw image, int32 label).
        prepare: Deterministic raw image -> image (decode, maybe resize).
        transform: image -> float32 image in [0, 255] (e.g. resize + centre crop).
        batch_size: Batch size.
        cache: Cache prepared images in memory (small datasets).
    """
    if cache:
        records = records.map(lambda x, y: (prepare(x), y), num_parallel_calls=tf.data.AUTOTUNE).cache()
        prepare = tf.identity
    mapped = records.map(
        lambda x, y: (preprocessing.normalize(transform(prepare(x))), y),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _deterministic(mapped.batch(batch_size).prefetch(tf.data.AUTOTUNE))
