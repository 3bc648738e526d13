"""Records the authors' L2T-ww iteration, run unmodified, as the fixture of tests/test_official_trajectory.py.

Run it with a Python that has torch and NumPy (no TensorFlow needed), on a
checkout of the authors' repository (github alinlab/L2T-ww; its
`logs/tinyimagenet-200-resnet32` holds the official ResNet-32 source):

    /path/to/torch-python tests/reference/record_official_trajectory.py \
        --official_repo=/path/to/L2T-ww --output=tests/data/official_trajectory.npz

It calls the authors' `train_l2t_ww.main()` in float64 with their README's
CIFAR-100 command line, once for each meta learning rate of
`trajectory_state.META_LEARNING_RATES`, and with their Stanford Dogs command
line (ResNet-34 → ResNet-18) once, and lets it run `ITERATIONS` iterations of
its own loop each time (about 1½ minutes and 5 minutes on 2 cores). Nothing of
that loop is restated here. This script only: loads the states of
`trajectory_state.py` into the modules right after the authors' constructors
run (the ImageNet ResNet-34 through the `load_url` their code downloads it
with), hands their loop our batches instead of the datasets
(`check_dataset`), and wraps a few calls to *record* what they computed (the
losses, the meta-gradient at the Adam step, the state between iterations).
The run-time adjustments that let the 2019 code run on torch 2 are those of
`bench/official_program.py`.
"""

import argparse
import contextlib
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(os.path.dirname(HERE))]  # trajectory_state, and the repository's bench/
import trajectory_state as state_lib  # noqa: E402  pylint: disable=wrong-import-position

from bench import official_program  # noqa: E402  pylint: disable=wrong-import-position


class _Stop(Exception):
    """Ends the authors' main() once the recorded iterations are done."""


class Recorder:
    """Runs the authors' main() once per meta learning rate and collects the fixture."""

    def __init__(self, official_repo):
        import torch  # pylint: disable=import-outside-toplevel
        import torch.nn.functional as functional  # pylint: disable=import-outside-toplevel
        from torch import optim  # pylint: disable=import-outside-toplevel

        self.torch = torch
        torch.set_default_dtype(torch.float64)  # every module the authors build is then float64
        self.state, self.images, self.labels, self.probe, self.num_classes = None, None, None, None, None
        self.fixture = {}
        self.modules = {}
        self.prefix = ""
        self.iteration = -1
        self.phase = "setup"
        self.losses = {}

        official = official_program.import_official(official_repo)
        from models import resnet_ilsvrc  # pylint: disable=import-outside-toplevel
        from train.meta_optimizers import MetaSGD  # pylint: disable=import-outside-toplevel

        self.official = official
        recorder = self

        original_check_model = official.check_model

        def check_model(opt):
            model = original_check_model(opt)
            if opt.model == opt.target_model:
                recorder._load(model, "target.")
                recorder.modules["target"] = model
            else:
                recorder.modules["source"] = model
            return model

        official.check_model = check_model
        # The ImageNet source: their resnet34(pretrained=True) loads what load_url returns; here, our state.
        resnet_ilsvrc.model_zoo.load_url = lambda url, *args, **kwargs: {
            key[len("source."):]: torch.from_numpy(value.copy())
            for key, value in recorder.state.items() if key.startswith("source.")
        }
        original_resnet34 = resnet_ilsvrc.resnet34

        def resnet34(pretrained=False, **kwargs):
            model = original_resnet34(pretrained=pretrained, **kwargs)
            if pretrained:
                recorder.modules["source"] = model
            return model

        resnet_ilsvrc.resnet34 = resnet34
        for cls, prefix in [(official.WeightNetwork, "wnet."), (official.LossWeightNetwork, "lwnet."),
                            (official.FeatureMatching, "branch.")]:
            self._load_after_init(cls, prefix)
        official.check_dataset = self._check_dataset

        original_matching = official.FeatureMatching.forward

        def matching_forward(module, *args, **kwargs):
            loss = original_matching(module, *args, **kwargs)
            recorder._record_loss("matching", loss)
            return loss

        official.FeatureMatching.forward = matching_forward
        original_cross_entropy = functional.cross_entropy

        def cross_entropy(*args, **kwargs):
            loss = original_cross_entropy(*args, **kwargs)
            recorder._record_loss("ce", loss)
            return loss

        functional.cross_entropy = cross_entropy

        original_step, original_meta_backward = MetaSGD.step, MetaSGD.meta_backward

        def step(optimizer, objective, *args, **kwargs):
            recorder.modules["target_optimizer"] = optimizer
            result = original_step(optimizer, objective, *args, **kwargs)
            if objective is None:  # the real step: the look-ahead follows
                recorder._put(f"it{recorder.iteration}/learning_rate", optimizer.param_groups[0]["lr"])
                recorder.phase = "look_ahead"
            return result

        def meta_backward(optimizer):
            recorder.phase = "meta_backward"
            return original_meta_backward(optimizer)

        MetaSGD.step, MetaSGD.meta_backward = step, meta_backward
        original_adam_step = optim.Adam.step

        def adam_step(optimizer, *args, **kwargs):
            for prefix in ("wnet", "lwnet"):
                for name, parameter in recorder.modules[prefix].named_parameters():
                    recorder._summarise(f"it{recorder.iteration}/meta_gradient", f"{prefix}.{name}", parameter.grad)
            return original_adam_step(optimizer, *args, **kwargs)

        optim.Adam.step = adam_step

    # ------------------------------------------------------------ helpers

    def _put(self, key, value):
        self.fixture[self.prefix + key] = np.array(value, dtype=np.float64)

    def _summarise(self, group, name, tensor):
        sums, samples = state_lib.summary(name, tensor.detach().cpu().numpy())
        self._put(f"{group}/{name}/sums", sums)
        self._put(f"{group}/{name}/samples", samples)

    def _record_loss(self, kind, loss):
        if self.phase in ("real", "look_ahead"):
            self.losses.setdefault(f"{self.phase}_{kind}", []).append(loss.item())

    def _load(self, module, prefix):
        torch = self.torch
        own = module.state_dict()
        values = {}
        for key, value in self.state.items():
            if key.startswith(prefix):
                name = key[len(prefix):]
                assert name in own and tuple(own[name].shape) == value.shape, (key, value.shape)
                values[name] = torch.from_numpy(value.copy())
        _, unexpected = module.load_state_dict(values, strict=False)
        assert values and not unexpected, (prefix, unexpected)

    def _load_after_init(self, cls, prefix):
        recorder, original_init = self, cls.__init__

        def __init__(module, *args, **kwargs):
            original_init(module, *args, **kwargs)
            recorder._load(module, prefix)
            recorder.modules[prefix[:-1]] = module

        cls.__init__ = __init__

    def _nchw(self, images):
        return self.torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))

    def _snapshot(self, tag):
        """θ, BN statistics, φ, momentum buffers, and w, λ and the source's logits on the probe batch."""
        torch = self.torch
        parameter_names = {}
        for prefix in ("target", "branch", "wnet", "lwnet"):
            module = self.modules[prefix]
            for name, value in module.state_dict().items():
                if f"{prefix}.{name}" in self.state:
                    self._summarise(f"{tag}/state", f"{prefix}.{name}", value)
            for name, parameter in module.named_parameters():
                parameter_names[parameter] = f"{prefix}.{name}"
        optimizer = self.modules.get("target_optimizer")  # MetaSGD has a __len__: test against None
        for parameter, name in parameter_names.items():
            buffer = optimizer.state.get(parameter, {}).get("momentum_buffer") if optimizer is not None else None
            if buffer is not None and name in self.state and not name.startswith(("wnet", "lwnet")):
                self._summarise(f"{tag}/momentum", name, buffer)
        with torch.no_grad():
            logits, features = self.modules["source"].forward_with_features(self._nchw(self.probe))
            channel_weights = self.modules["wnet"](features)
            pair_weights = self.modules["lwnet"](features)
        self._summarise(f"{tag}/probe", "source_logits", logits)
        for p in range(len(channel_weights)):
            self._summarise(f"{tag}/probe", f"channel_weights_{p}", channel_weights[p])
            self._put(f"{tag}/probe/pair_weights/{p}", pair_weights[p].reshape(-1).numpy())

    def _finish_iteration(self):
        for key, values in self.losses.items():
            self._put(f"it{self.iteration}/losses/{key}", values)
        self.losses = {}
        self._snapshot(f"it{self.iteration}")

    def _batches(self):
        torch = self.torch
        for i in range(state_lib.ITERATIONS):
            if i == 0:
                self._snapshot("init")
            else:
                self._finish_iteration()
            self.iteration, self.phase = i, "real"
            yield self._nchw(self.images[i]), torch.from_numpy(self.labels[i].astype(np.int64))
        self._finish_iteration()
        raise _Stop()

    def _check_dataset(self, opt):
        opt.num_classes = self.num_classes
        batches = self._batches()

        class Loader:  # pylint: disable=too-few-public-methods
            def __len__(self):
                return state_lib.ITERATIONS

            def __iter__(self):
                return batches

        return [Loader(), [], []]

    # ---------------------------------------------------------------- run

    def run(self, setting, meta_learning_rate, prefix):
        """One run of the authors' main(): setting "cifar100" (the 32 setting) or "dog" (the 224 setting)."""
        self.prefix = prefix
        self.modules, self.iteration, self.phase, self.losses = {}, -1, "setup", {}
        self._put("meta_learning_rate", meta_learning_rate)
        work = tempfile.mkdtemp(prefix="official_trajectory_")
        if setting == "cifar100":
            assert official_program.CIFAR_PAIRS == state_lib.PAIRS_SPEC
            self.state, self.num_classes = state_lib.initial_state(), state_lib.NUM_CLASSES
            self.images, self.labels, self.probe = state_lib.batches()
            batch_size = state_lib.BATCH_SIZE
        else:
            self.state, self.num_classes = state_lib.resnet_initial_state(), state_lib.RESNET_TARGET_CLASSES
            self.images, self.labels, self.probe = state_lib.resnet_batches()
            batch_size = state_lib.RESNET_BATCH_SIZE  # and the authors' default --pairs, the 16 of RESNET_PAIRS
        sys.argv = official_program.command_line(
            setting, work, batch_size, state_lib.INNER_STEPS, extra=("--meta-lr", repr(meta_learning_rate))
        )
        try:
            self.official.main()
        except _Stop:
            pass
        assert self.iteration == state_lib.ITERATIONS - 1, f"the authors' loop stopped at iteration {self.iteration}"
        pairs = [tuple(pair) for pair in self.modules["wnet"].pairs]
        assert pairs == (state_lib.PAIRS if setting == "cifar100" else state_lib.RESNET_PAIRS), pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official_repo", required=True, help="a checkout of github alinlab/L2T-ww")
    parser.add_argument("--output", required=True, help="the fixture to write (.npz)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    output = os.path.abspath(args.output)
    import torch  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(args.threads)
    recorder = Recorder(os.path.abspath(args.official_repo))
    log_path = os.path.join(tempfile.mkdtemp(prefix="official_trajectory_"), "stdout.log")
    with open(log_path, "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):  # the authors' log lines
        for index, meta_learning_rate in enumerate(state_lib.META_LEARNING_RATES):
            recorder.run("cifar100", meta_learning_rate, f"meta_lr{index}/")
        recorder.run("dog", state_lib.RESNET_META_LEARNING_RATE, "resnet/")
    state_lib.write_fixture(output, recorder.fixture, torch_version=torch.__version__)
    print(f"wrote {output} ({os.path.getsize(output) / 1e3:.0f} kB, torch {torch.__version__}); "
          f"the authors' log: {log_path}")


if __name__ == "__main__":
    main()
