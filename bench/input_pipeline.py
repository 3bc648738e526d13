"""Throughput of the training input pipeline on Stanford-Dogs-shaped images.

Writes `--num_images` synthetic JPEGs of about 500x375 (the typical Stanford Dogs
size; smooth content so they compress like photos) as an image folder, builds
`load_dataset("folder:...")`'s training set (decode, Inception crop, flip,
normalise, batch, prefetch: the same path as stanford_dogs), warms up, then times
`--num_batches` batches. Prints one JSON line last.

    python -m bench.input_pipeline --batch_size=64 --image_size=224 --num_batches=50
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from keras_l2t.data import load_dataset  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_integer("image_size", 224, "Model input side.")
flags.DEFINE_integer("num_batches", 50, "Batches to time after warm-up.")
flags.DEFINE_integer("warmup_batches", 10, "Batches read before timing starts.")
flags.DEFINE_integer("num_images", 512, "Synthetic JPEGs to generate.")
flags.DEFINE_integer("num_classes", 8, "Class folders the images are spread over.")
flags.DEFINE_string("work_dir", None, "Where to write the images (default: a temp dir, removed after).")


def _photo_like(rng):
    """A ~500x375 RGB image: smooth random colour field plus mild noise."""
    height, width = int(rng.integers(333, 376)), int(rng.integers(450, 501))
    coarse = rng.uniform(0, 255, size=(1, 12, 16, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, [height, width], method="bicubic")[0].numpy()
    noisy = smooth + rng.normal(0, 6, size=smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def write_images(root, num_images, num_classes, seed=0):
    """PATH/{train,test}/class_<k>/<i>.jpg; returns the mean JPEG size in bytes."""
    rng = np.random.default_rng(seed)
    sizes = []
    for i in range(num_images):
        folder = os.path.join(root, "train", f"class_{i % num_classes}")
        os.makedirs(folder, exist_ok=True)
        data = tf.io.encode_jpeg(_photo_like(rng), quality=90).numpy()
        sizes.append(len(data))
        with open(os.path.join(folder, f"{i}.jpg"), "wb") as f:
            f.write(data)
    for k in range(num_classes):  # one test image per class: the folder layout needs it
        folder = os.path.join(root, "test", f"class_{k}")
        os.makedirs(folder, exist_ok=True)
        shutil.copy(os.path.join(root, "train", f"class_{k}", f"{k}.jpg"), folder)
    return float(np.mean(sizes))


def main(argv):
    del argv
    root = FLAGS.work_dir or tempfile.mkdtemp(prefix="input_pipeline_")
    try:
        mean_jpeg_bytes = write_images(root, FLAGS.num_images, FLAGS.num_classes)
        splits = load_dataset(
            f"folder:{root}", image_size=FLAGS.image_size, batch_size=FLAGS.batch_size, val_fraction=0.0
        )
        batches = iter(splits.train.repeat())
        for _ in range(FLAGS.warmup_batches):
            next(batches)
        start = time.perf_counter()
        for _ in range(FLAGS.num_batches):
            images, _ = next(batches)
        images.numpy()
        elapsed = time.perf_counter() - start
    finally:
        if FLAGS.work_dir is None:
            shutil.rmtree(root, ignore_errors=True)
    import keras
    import tensorflow_datasets as tfds

    print(
        json.dumps(
            {
                "benchmark": "input_pipeline",
                "images_per_s": round(FLAGS.num_batches * FLAGS.batch_size / elapsed, 1),
                "batches_per_s": round(FLAGS.num_batches / elapsed, 2),
                "batch_size": FLAGS.batch_size,
                "image_size": FLAGS.image_size,
                "num_batches": FLAGS.num_batches,
                "warmup_batches": FLAGS.warmup_batches,
                "num_images": FLAGS.num_images,
                "mean_jpeg_bytes": round(mean_jpeg_bytes),
                "cpu_count": os.cpu_count(),
                "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                "versions": {
                    "python": platform.python_version(),
                    "tensorflow": tf.__version__,
                    "keras": keras.__version__,
                    "tensorflow_datasets": tfds.__version__,
                    "numpy": np.__version__,
                },
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
