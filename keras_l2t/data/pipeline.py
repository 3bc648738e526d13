"""tf.data assembly: selected examples -> batched, normalised training and eval sets.

Training: [decode + resize + cache, for small datasets] -> full shuffle of the
whole training set (reshuffled every epoch) -> decode + augment + normalise
(parallel, one stateless seed per example from `tf.data.Dataset.random`) ->
batch(drop_remainder=True) -> prefetch. Dropping the last partial batch is a
documented deviation from the official `drop_last=False`.
Evaluation: decode + eval transform + normalise -> batch -> prefetch, in a
deterministic order. Given the same seed, the training stream is reproducible.

`train_epochs` gives the same stream keyed by epoch instead of by iteration
count: epoch e's order and augmentation depend on (seed, e) alone, so a run
resumed at epoch e sees exactly the batches an uninterrupted run would.

Large TFDS datasets are shuffled as encoded bytes (decoding comes after the
shuffle): the whole training set is held, about 450 MB of JPEGs for Stanford
Dogs; image folders are shuffled as file paths and read afterwards.
"""

import tensorflow as tf

from keras_l2t.data import preprocessing


def decode_encoded(contents):
    """Encoded image bytes -> uint8 HxWx3, the pixels PIL's `Image.open(f).convert("RGB")` gives.

    The official loaders read every image with PIL. JPEGs (found by their leading
    bytes, whatever the file is called) are decoded with libjpeg's accurate integer
    IDCT, PIL's; TensorFlow's default fast IDCT (`tf.io.decode_image`) is off by
    several grey levels. PNG, GIF (first frame) and BMP are lossless and read by
    `tf.io.decode_image`. Greyscale and CMYK JPEGs become RGB as with PIL.
    """

    def jpeg():
        return tf.io.decode_jpeg(contents, channels=3, dct_method="INTEGER_ACCURATE")

    def lossless():
        return tf.io.decode_image(contents, channels=3, expand_animations=False)

    decoded = tf.cond(tf.io.is_jpeg(contents), jpeg, lossless)
    return tf.ensure_shape(decoded, [None, None, 3])


def decode(image):
    """Raw example image (encoded bytes, see `decode_encoded`, or uint8 array) -> uint8 HxWx3."""
    if image.dtype == tf.string:
        return decode_encoded(image)
    return preprocessing.to_three_channels(image)


def _deterministic(dataset):
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options)


def _prepared_records(records, prepare, augment, cache):
    """(records, maybe prepared and cached; ((image, label), seed) -> normalised augmented example)."""
    if cache:
        records = records.map(lambda x, y: (prepare(x), y), num_parallel_calls=tf.data.AUTOTUNE).cache()
        prepare = tf.identity

    def transform(example, example_seed):
        image, label = example
        return preprocessing.normalize(augment(prepare(image), example_seed)), label

    return records, transform


def train_dataset(records, num_examples, *, prepare, augment, batch_size, seed, cache):
    """Shuffled, augmented, batched training set.

    Args:
        records: Dataset of (raw image, int32 label).
        num_examples: Number of records (the shuffle buffer: a full shuffle).
        prepare: Deterministic raw image -> image (decode, maybe resize).
        augment: (image, seed [2]) -> float32 image in [0, 255].
        batch_size: Batch size; the last partial batch is dropped.
        seed: Seed of the shuffle and of the augmentation stream.
        cache: Cache prepared images in memory before shuffling (small datasets).
    """
    records, transform = _prepared_records(records, prepare, augment, cache)
    shuffled = records.shuffle(max(1, num_examples), seed=seed, reshuffle_each_iteration=True)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    augmented = tf.data.Dataset.zip((shuffled, seeds)).map(transform, num_parallel_calls=tf.data.AUTOTUNE)
    batched = augmented.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return _deterministic(batched)


def _stateless_permutation(records, window, seed):
    """The records permuted by `seed` ([2] int64), in consecutive windows of at most `window`."""

    def permute(index, batch):
        images, labels = batch
        order = tf.random.experimental.stateless_shuffle(
            tf.range(tf.shape(labels)[0]), seed=tf.random.experimental.stateless_fold_in(seed, index)
        )
        return tf.data.Dataset.from_tensor_slices((tf.gather(images, order), tf.gather(labels, order)))

    return records.batch(window).enumerate().flat_map(permute)


def train_epochs(records, num_examples, *, prepare, augment, batch_size, seed, cache):
    """A function (first_epoch, num_epochs, steps_per_epoch=None) -> batches of those epochs.

    Epoch e is a stateless permutation of all the records seeded by (seed, e) with
    per-example augmentation seeds (seed, e, position), cut to `steps_per_epoch`
    batches (default: every full batch, the last partial one dropped; more steps
    continue into a new permutation). Nothing depends on how many epochs were
    iterated before, which is what makes resuming exact. Arguments as for
    `train_dataset`.
    """
    records, transform = _prepared_records(records, prepare, augment, cache)
    window = max(1, num_examples)
    full_batches = num_examples // batch_size

    def make(first_epoch, num_epochs, steps_per_epoch=None):
        steps = full_batches if steps_per_epoch is None else steps_per_epoch
        if steps < 1:
            raise ValueError(f"{num_examples} examples make no batch of {batch_size}.")

        def one_epoch(epoch):
            def one_pass(repeat):
                pass_seed = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch, repeat])
                permuted = _stateless_permutation(records, window, pass_seed)
                example_seeds = tf.data.Dataset.range(num_examples).map(
                    lambda i: tf.random.experimental.stateless_fold_in(pass_seed, i)
                )
                return tf.data.Dataset.zip((permuted, example_seeds))

            examples = tf.data.Dataset.range(2**62).flat_map(one_pass)
            augmented = examples.map(transform, num_parallel_calls=tf.data.AUTOTUNE)
            return augmented.batch(batch_size, drop_remainder=True).take(steps)

        epochs = tf.data.Dataset.range(first_epoch, first_epoch + num_epochs)
        return _deterministic(epochs.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE))

    return make


def eval_dataset(records, *, prepare, transform, batch_size, cache, num_examples=None):
    """Batched evaluation set in a fixed order (no shuffling, last batch kept).

    Args:
        records: Dataset of (raw image, int32 label).
        prepare: Deterministic raw image -> image (decode, maybe resize).
        transform: image -> float32 image in [0, 255] (e.g. resize + centre crop).
        batch_size: Batch size.
        cache: Cache prepared images in memory (small datasets).
        num_examples: Number of records, if known: asserted, so that Keras knows
            the number of batches (filtered tfds records have none).
    """
    if num_examples is not None:
        records = records.apply(tf.data.experimental.assert_cardinality(num_examples))
    if cache:
        records = records.map(lambda x, y: (prepare(x), y), num_parallel_calls=tf.data.AUTOTUNE).cache()
        prepare = tf.identity
    mapped = records.map(
        lambda x, y: (preprocessing.normalize(transform(prepare(x))), y),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return _deterministic(mapped.batch(batch_size).prefetch(tf.data.AUTOTUNE))
