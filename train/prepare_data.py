"""Prepares a TFDS dataset ahead of training, offline from local archives if asked.

    python -m train.prepare_data --dataset=fashion_mnist --from_dir=/usr/share/datasets/fashion-mnist

With `--from_dir`, the real TFDS builder runs on the archives in that directory
(recompressed copies, such as Debian's `dataset-fashion-mnist`, are restored and
verified against TFDS' registered checksums; see `keras_l2t/data/local_copies.py`).
Without it, the dataset is prepared as `train.main` would: from the TFDS manual
dir, by downloading, or from an installed local copy.
"""

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    # pylint: disable=import-outside-toplevel
    from keras_l2t.data import availability, datasets, local_copies

    spec = datasets.DATASETS.get(FLAGS.dataset)
    if spec is None or spec.tfds_name is None:
        tfds_names = sorted(s.tfds_name for s in datasets.DATASETS.values() if s.tfds_name)
        raise app.UsageError(f"--dataset must be a TFDS dataset, one of {tfds_names}; got {FLAGS.dataset!r}.")
    try:
        if FLAGS.from_dir:
            builder = local_copies.prepare_from_local_copy(spec.tfds_name, FLAGS.from_dir, data_dir=FLAGS.data_dir)
        else:
            builder = availability.prepared_builder(spec.tfds_name, data_dir=FLAGS.data_dir)
    except (local_copies.LocalCopyError, availability.DatasetNotFoundError) as error:
        raise app.UsageError(str(error)) from error
    sizes = ", ".join(f"{name} {split.num_examples}" for name, split in sorted(builder.info.splits.items()))
    print(f"{spec.tfds_name} is prepared in {builder.data_dir} ({sizes}).")


if __name__ == "__main__":
    from train import startup

    startup.start_tensorflow()
    flags.DEFINE_string("dataset", "fashion_mnist", "Dataset to prepare (a TFDS dataset of train.main).")
    flags.DEFINE_string("data_dir", None, "tfds data directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets).")
    flags.DEFINE_string(
        "from_dir", None,
        "Directory with the dataset's original archives (e.g. /usr/share/datasets/fashion-mnist); "
        "default: prepare from the manual dir, a download, or an installed local copy.",
    )
    app.run(main)
