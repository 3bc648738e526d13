"""Run directories that are new for each configuration: `runs/<dataset>-<what>-<hash of the configuration>`.

Used where `--model_dir` is left out, so that a run with other flags never
lands in (and is refused by) the directory of an earlier one, while the same
command finds its own run again, to resume it or to show its results.
"""

import dataclasses
import hashlib
import json
import os
import re

from keras_l2t import checkpointing

RUNS_ROOT = "runs"
HASH_LENGTH = 8
# Fields that may differ between a run and its resumption (checkpointing.RunDirectory ignores them too).
IGNORED_FIELDS = frozenset(checkpointing.RunDirectory("").ignored_flags) | {"model_dir"}


# Fields added after runs existed, left out of the hash at their dataclass default: the runs they did not change
# keep their directories (an older flags.json lacking them reads as that default, `experiment.run`).
ADDED_FIELDS = frozenset(
    {"full_precision_look_ahead", "meta_warmup_epochs", "pair_weight_init", "second_statistics_update", "source_blocks"}
)


def _canonical(part):
    if dataclasses.is_dataclass(part):
        defaults = {f.name: f.default for f in dataclasses.fields(part)}
        return {
            k: v for k, v in dataclasses.asdict(part).items()
            if k not in IGNORED_FIELDS and not (k in ADDED_FIELDS and v == defaults[k])
        }
    return part


def config_hash(*parts):
    """A short hex hash of `parts` (ExperimentConfigs, minus IGNORED_FIELDS, and JSON-able values)."""
    text = json.dumps([_canonical(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_LENGTH]


def dataset_label(dataset):
    """A directory-name-safe name of `dataset` (`folder:PATH` → the folder's name)."""
    if dataset.startswith("folder:"):
        dataset = os.path.basename(os.path.normpath(dataset[len("folder:"):])) or "folder"
    return re.sub(r"[^A-Za-z0-9_.]+", "_", dataset)


def default_model_dir(dataset, what, *parts, root=RUNS_ROOT):
    """E.g. `runs/digits-scratch_fm_l2t_ww_frozen_l2t_ww-3f9a1c2e`, the hash over `parts`."""
    return os.path.join(root, f"{dataset_label(dataset)}-{what}-{config_hash(*parts)}")
