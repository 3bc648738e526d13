"""Running the authors' L2T-ww program (github alinlab/L2T-ww) unmodified, under torch 2, from a checkout.

Shared by `bench.official_step` (their iteration timed beside ours) and
`tests/reference/record_official_trajectory.py` (their iteration recorded for a
CI test). Imports torch, never TensorFlow: run it with a Python that has torch.

Three run-time adjustments let the 2019 code run on torch 2, none of which
changes what it computes: checkpoints are loaded to the CPU (the shipped source
holds CUDA tensors); `zero_grad` keeps torch 1.x's zeroed (not None) gradients,
which `MetaSGD.meta_backward` reads; and where torchvision's compiled operators
do not load (a torch build it was not built for), its pure-Python modules are
imported without them (the authors import only `BasicBlock` and two namespaces).
"""

import importlib.util
import os
import sys
import types


def _import_torchvision_without_operators():
    """Makes `import torchvision.<module>` work when its compiled extension cannot load."""
    try:
        import torchvision  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except (RuntimeError, ImportError, OSError) as error:
        spec = importlib.util.find_spec("torchvision")
        if spec is None:
            raise SystemExit("torchvision is not installed in this Python: pip install torchvision") from error
        shell = types.ModuleType("torchvision")
        shell.__path__ = list(spec.submodule_search_locations)
        sys.modules["torchvision"] = shell
        print(f"torchvision's compiled operators did not load ({str(error).splitlines()[0]}); "
              "using its pure-Python modules only")


def import_official(official_repo):
    """Applies the adjustments, enters `official_repo` and returns its `train_l2t_ww` module.

    The working directory becomes the checkout: the authors' script opens
    `logs/` and `split/` relatively.
    """
    import torch  # pylint: disable=import-outside-toplevel
    from torch import optim  # pylint: disable=import-outside-toplevel

    official_repo = os.path.abspath(official_repo)
    if not os.path.isfile(os.path.join(official_repo, "train_l2t_ww.py")):
        raise SystemExit(f"{official_repo} is not a checkout of github alinlab/L2T-ww (no train_l2t_ww.py)")
    original_load = torch.load
    torch.load = lambda *args, **kwargs: original_load(*args, **{"map_location": "cpu", **kwargs})
    original_zero_grad = optim.Optimizer.zero_grad
    optim.Optimizer.zero_grad = lambda self, set_to_none=False: original_zero_grad(self, set_to_none=set_to_none)
    _import_torchvision_without_operators()
    # Their `train/` has no __init__.py: a regular package of that name elsewhere on the path (keras-l2t's own,
    # when run from its repository) would win over it, so such entries are left out while their script imports.
    shadowing = [entry for entry in sys.path if os.path.isfile(os.path.join(entry or ".", "train", "__init__.py"))]
    saved_path = list(sys.path)
    sys.path[:] = [official_repo] + [entry for entry in sys.path if entry not in shadowing]
    sys.modules.pop("train", None)
    os.chdir(official_repo)
    try:
        import train_l2t_ww  # pylint: disable=import-outside-toplevel
    finally:
        sys.path[:] = [official_repo] + saved_path
    return train_l2t_ww


def command_line(setting, work_dir, batch_size, inner_steps, extra=()):
    """`sys.argv` of the authors' README command for `setting`: "cifar100" (the 32 setting) or "dog" (224).

    The 32 setting transfers from their Tiny-ImageNet ResNet-32 (`logs/`) to
    VGG-9-BN over the README's 15 pairs; the 224 setting from the ImageNet
    ResNet-34 (fetched by `load_url`, which callers replace) to ResNet-18 over
    their default 16 pairs.
    """
    if setting == "cifar100":
        models = ["--source-path", "logs", "--source-model", "resnet32", "--source-domain", "tinyimagenet-200",
                  "--target-model", "vgg9_bn", "--pairs", CIFAR_PAIRS]
    elif setting == "dog":
        models = ["--source-model", "resnet34", "--source-domain", "imagenet", "--target-model", "resnet18"]
    else:
        raise ValueError(f"setting must be 'cifar100' or 'dog', not {setting!r}")
    return [
        "train_l2t_ww.py", "--dataset", setting, "--datasplit", setting, "--dataroot", work_dir,
        "--experiment", os.path.join(work_dir, "experiment"), *models,
        "--batchSize", str(batch_size), "--T", str(inner_steps), *extra,
    ]


# The README's CIFAR-100 / STL-10 pairs (source tap - target tap).
CIFAR_PAIRS = "4-0,4-1,4-2,4-3,4-4,9-0,9-1,9-2,9-3,9-4,14-0,14-1,14-2,14-3,14-4"
