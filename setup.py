"""Packaging for keras-l2t: Learning What and Where to Transfer in Keras 3."""

import setuptools

setuptools.setup(
    name="keras-l2t",
    version="0.1.0",
    description=(
        "Keras 3 / TensorFlow implementation of L2T-ww: Learning What and "
        "Where to Transfer (Jang et al., ICML 2019)."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["keras_l2t", "keras_l2t.*", "train", "train.*", "bench", "bench.*"]),
    python_requires=">=3.10",
    install_requires=[
        # TensorFlow of the Keras 3 era (CPU works out of the box; GPU users
        # add `tensorflow[and-cuda]`, see BUILD.md).
        "tensorflow>=2.16",
        "keras>=3.10",  # multi_worker_fit's hooks: 3.7; on several replicas, Keras' losses: 3.8, logs: 3.10
        # Pinned: tests seed tfds' download cache (private naming of 4.9.x).
        "tensorflow-datasets==4.9.10",
        "absl-py",
        "tensorboard",
        # Needed by real code paths that tfds does not declare:
        "scipy",  # stanford_dogs reads train_list.mat / test_list.mat
        "importlib_resources",  # tfds 4.9.x DatasetBuilder.code_path
        "scikit-learn",  # the embedded `digits` dataset
        "matplotlib",  # λ-matrix images and result charts
        "filelock>=4.3",  # the run directory's lock on every OS (discards locks on unlinked files)
        # keras-hub sources (the 224 setting's ImageNet ResNet-34 through timm, any image preset):
        # keras-hub converts timm checkpoints (safetensors), fetched with huggingface_hub.
        "keras-hub>=0.32; python_version >= '3.11'",
        "safetensors",
        "huggingface_hub",
    ],
    package_data={
        # The study configs of `train.reproduce --config=NAME`, found from any directory once installed.
        "train": ["configs/*.cfg"],
        # Data from the authors' repository (MIT, licence beside it): the Tiny-ImageNet ResNet-32
        # source and the official split files.
        "keras_l2t": ["weights/*.npz", "weights/LICENSE-*"],
        "keras_l2t.data": ["split_files/*.json", "split_files/LICENSE-*"],
    },
    entry_points={
        # Console commands beside `python -m train.main` etc.; unlike `python -m`, they never import a
        # `train` package from the current directory (a user's own train.py).
        "console_scripts": [
            "l2t-train = train.main:console_main",
            "l2t-pretrain = train.pretrain_source:console_main",
            "l2t-reproduce = train.reproduce:console_main",
        ],
    },
    extras_require={
        "test": ["pytest", "dill", "pillow"],  # pillow: decoding checked against PIL, the authors' loader
    },
)
