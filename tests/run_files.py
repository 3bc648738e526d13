"""Reading a run directory's files in tests."""

import csv
import json
import os


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def history(model_dir):
    """The rows of `model_dir/history.csv`, header first, as strings."""
    with open(os.path.join(model_dir, "history.csv"), encoding="utf-8", newline="") as f:
        return list(csv.reader(f))
