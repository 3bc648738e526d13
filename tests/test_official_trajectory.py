"""keras-l2t replays the authors' own L2T-ww iterations, recorded from their unmodified code.

`tests/data/official_trajectory.npz` holds what the authors' `train_l2t_ww.main()`
computed over 4 iterations of their README's CIFAR-100 command (ResNet-32 →
VGG-9-BN, 15 pairs, T = 2), in float64, at meta learning rates 1e-4 and 1e-2,
and of their Stanford Dogs command (ResNet-34 → ResNet-18 at 224, 16 pairs) at
1e-4, from the states and batches of `tests/reference/trajectory_state.py`
(`tests/reference/record_official_trajectory.py` writes it; BUILD.md says how).
Here keras-l2t starts from the same state, runs `train_on_batch` on the same
batches, and must agree after every iteration to 1e-9 relative: the losses, the
meta-gradient, θ, the momentum buffers, the BatchNorm statistics, φ, and w and
λ on a probe batch. A failure lists the worst entries, which says where the two
programs part.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_l2t
from keras_l2t import backbones
from keras_l2t.sources import official as official_weights
from keras_l2t.optimizers import SGD, AdamL2, EpochCosineDecay
from keras_l2t.sources import load_source
from tests.reference import trajectory_state as state_lib

FIXTURE = os.path.join(os.path.dirname(__file__), "data", "official_trajectory.npz")
TOLERANCE = 1e-9
# Scales below this count as this: what is zero analytically carries only round-off (the gradient of a
# convolution's bias followed by BatchNorm is 0, so its momentum buffer is wd·bias, ~1e-6, plus ~1e-15 of
# round-off), so 1e-9 of it is checked to 1e-14 absolute.
SCALE_FLOOR = 1e-5


@pytest.fixture(scope="module")
def official():
    arrays, metadata = state_lib.read_fixture(FIXTURE)
    assert metadata["torch_version"]
    return arrays


class RecordingAdamL2(AdamL2):
    """AdamL2 that keeps the last gradients it was given (the meta-gradient), in variables of its own."""

    def build(self, variables):
        super().build(variables)
        self.last_gradients = [tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False) for v in variables]

    def apply(self, grads, trainable_variables=None):
        for kept, gradient in zip(self.last_gradients, grads):
            kept.assign(gradient)
        return super().apply(grads, trainable_variables)


def _conv(kernel):
    return np.transpose(kernel, (3, 2, 0, 1))  # HWIO -> OIHW


def _from_official(value):
    """The official layout of `name` back to the Keras variable's."""
    if value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    return np.transpose(value) if value.ndim == 2 else value


def _same(value):
    return value


def _resnet_layout(backbone, prefix, blocks_per_stage):
    """[(torchvision name, keras variable, to the official layout)] of our ResNet's weights and BN statistics."""
    network = backbone.network
    layout = []

    def conv(ours, theirs):
        layout.append((f"{prefix}{theirs}.weight", network.get_layer(ours).kernel, _conv))

    def batch_norm(ours, theirs):
        bn = network.get_layer(ours)
        for suffix, variable in [("weight", bn.gamma), ("bias", bn.beta), ("running_mean", bn.moving_mean),
                                 ("running_var", bn.moving_variance)]:
            layout.append((f"{prefix}{theirs}.{suffix}", variable, _same))

    conv("conv1", "conv1")
    batch_norm("bn1", "bn1")
    for stage, blocks in enumerate(blocks_per_stage, 1):
        for block in range(blocks):
            ours, theirs = f"layer{stage}_{block}", f"layer{stage}.{block}"
            for i in (1, 2):
                conv(f"{ours}_conv{i}", f"{theirs}.conv{i}")
                batch_norm(f"{ours}_bn{i}", f"{theirs}.bn{i}")
            if any(layer.name == f"{ours}_downsample_conv" for layer in network.layers):
                conv(f"{ours}_downsample_conv", f"{theirs}.downsample.0")
                batch_norm(f"{ours}_downsample_bn", f"{theirs}.downsample.1")
    fc = network.get_layer("fc")
    return layout + [(f"{prefix}fc.weight", fc.kernel, np.transpose), (f"{prefix}fc.bias", fc.bias, _same)]


def _vgg_layout(backbone):
    """[(official name, keras variable, to the official layout)] of our VGG-9-BN's weights and BN statistics."""
    same = _same
    network = backbone.network
    layout = []
    for i, (conv_index, bn_index) in enumerate(zip(state_lib.VGG_CONV_INDICES, state_lib.VGG_BN_INDICES), 1):
        conv, bn = network.get_layer(f"conv{i}"), network.get_layer(f"bn{i}")
        layout += [
            (f"target.features.{conv_index}.weight", conv.kernel, _conv),
            (f"target.features.{conv_index}.bias", conv.bias, same),
            (f"target.features.{bn_index}.weight", bn.gamma, same),
            (f"target.features.{bn_index}.bias", bn.beta, same),
            (f"target.features.{bn_index}.running_mean", bn.moving_mean, same),
            (f"target.features.{bn_index}.running_var", bn.moving_variance, same),
        ]
    classifier = network.get_layer("classifier")
    return layout + [("target.classifier.weight", classifier.kernel, np.transpose),
                     ("target.classifier.bias", classifier.bias, same)]


def _transfer_layout(model):
    """The same for the regressors ("branch") and the meta-networks ("wnet", "lwnet")."""
    same = _same
    layout = []
    for p, matcher in enumerate(model.matchers):
        layout += [(f"branch.{p}.weight", matcher.regressor.kernel, _conv), (f"branch.{p}.bias", matcher.regressor.bias, same)]
    for p, (what, where) in enumerate(zip(model.channel_weight_nets, model.pair_weight_nets)):
        layout += [
            (f"wnet.{p}.weight", what.dense.kernel, np.transpose), (f"wnet.{p}.bias", what.dense.bias, same),
            (f"lwnet.{p}.weight", where.dense.kernel, np.transpose), (f"lwnet.{p}.bias", where.dense.bias, same),
        ]
    return layout


def _model_at_the_official_state(meta_learning_rate, setting="cifar100"):
    """L2TWW with the state the authors' run started from; (model, layout of θ, BN statistics and φ, schedule)."""
    if setting == "cifar100":
        source = load_source(official_weights.TINYIMAGENET_RESNET32, image_size=32)
        target = backbones.vgg9_bn(num_classes=state_lib.NUM_CLASSES)
        pairs, state, source_layout = state_lib.PAIRS, state_lib.initial_state(), []
    else:
        source = backbones.resnet34(num_classes=state_lib.RESNET_SOURCE_CLASSES)
        target = backbones.resnet18(num_classes=state_lib.RESNET_TARGET_CLASSES)
        pairs, state = state_lib.RESNET_PAIRS, state_lib.resnet_initial_state()
        source_layout = _resnet_layout(source, "source.", (3, 4, 6, 3))
    model = keras_l2t.L2TWW(source, target, pairs=",".join(f"{m}-{n}" for m, n in pairs), beta=state_lib.BETA,
                            inner_steps=state_lib.INNER_STEPS)
    assert list(model.pairs) == pairs
    schedule = EpochCosineDecay(state_lib.LEARNING_RATE, state_lib.EPOCHS, steps_per_epoch=state_lib.ITERATIONS)
    model.compile(
        optimizer=SGD(schedule, momentum=state_lib.MOMENTUM, weight_decay=state_lib.WEIGHT_DECAY),
        meta_optimizer=RecordingAdamL2(meta_learning_rate, weight_decay=state_lib.META_WEIGHT_DECAY),
    )
    if setting == "cifar100":
        layout = _vgg_layout(target) + _transfer_layout(model)
    else:
        layout = _resnet_layout(target, "target.", (2, 2, 2, 2)) + _transfer_layout(model)
    everything = model.theta_variables + model.meta_variables + list(model.target.non_trainable_variables)
    assert {id(v) for _, v, _ in layout} == {id(v) for v in everything}
    if source_layout:  # the frozen source, from the same state (its BN statistics included)
        assert {id(v) for _, v, _ in source_layout} == {id(v) for v in source.variables}
    for name, variable, _ in layout + source_layout:
        variable.assign(_from_official(state[name]))
    return model, layout, schedule


class Comparison:
    """Relative differences against the recorded values, kept to report the worst."""

    def __init__(self, official, prefix):
        self.official, self.prefix, self.errors = official, prefix, {}

    def summary(self, key, name, value):
        value = np.asarray(value, np.float64)
        sums, samples = state_lib.summary(name, value)
        ref_sums, ref_samples = self.official[f"{self.prefix}{key}/{name}/sums"], self.official[f"{self.prefix}{key}/{name}/samples"]
        norm = max(ref_sums[1], SCALE_FLOOR)
        rms = max(ref_sums[1] / np.sqrt(value.size), SCALE_FLOOR)
        self.errors[f"{key}/{name}"] = max(
            abs(sums[0] - ref_sums[0]) / (norm * np.sqrt(value.size)),
            abs(sums[1] - ref_sums[1]) / norm,
            float(np.max(np.abs(samples - ref_samples))) / rms,
        )

    def values(self, key, value, scale=None):
        value, ref = np.asarray(value, np.float64).reshape(-1), self.official[self.prefix + key].reshape(-1)
        scale = np.maximum(np.abs(ref), SCALE_FLOOR) if scale is None else scale
        self.errors[key] = float(np.max(np.abs(value - ref) / scale))

    def check(self, where):
        worst = sorted(self.errors.items(), key=lambda item: -item[1])[:10]
        assert worst[0][1] <= TOLERANCE, f"keras-l2t and the authors' code part {where}; worst relative differences:\n" + "\n".join(
            f"  {key}: {error:.3e}" for key, error in worst
        )


def _compare_state(comparison, model, layout, tag, probe):
    for name, variable, to_official in layout:
        comparison.summary(f"{tag}/state", name, to_official(variable.numpy()))
        if variable.trainable and not name.startswith(("wnet", "lwnet")) and tag != "init":
            buffer = model.theta_optimizer.momentum_buffer(variable)
            comparison.summary(f"{tag}/momentum", name, to_official(buffer.numpy()))
    comparison.summary(f"{tag}/probe", "source_logits", model.source(probe, training=False))
    weights = model.transfer_weights(probe)
    for p in range(len(model.pairs)):
        comparison.summary(f"{tag}/probe", f"channel_weights_{p}", weights["channel_weights"][p])
        comparison.values(f"{tag}/probe/pair_weights/{p}", weights["pair_weights"][p])


def _replay(official, prefix, setting, batches):
    meta_learning_rate = float(official[prefix + "meta_learning_rate"])
    keras.utils.set_random_seed(0)
    model, layout, schedule = _model_at_the_official_state(meta_learning_rate, setting)
    images, labels, probe = batches
    probe = tf.constant(probe)
    comparison = Comparison(official, prefix)
    _compare_state(comparison, model, layout, "init", probe)
    comparison.check("before the first iteration (loading the state)")
    names = {id(v): name for name, v, _ in layout}
    to_official = {id(v): fn for _, v, fn in layout}
    for i in range(state_lib.ITERATIONS):
        model.reset_metrics()
        logs = model.train_on_batch(tf.constant(images[i]), tf.constant(labels[i]), return_dict=True)
        comparison = Comparison(official, prefix)
        comparison.values(f"it{i}/learning_rate", float(schedule(i)))
        comparison.values(f"it{i}/losses/real_ce", logs["ce"])
        comparison.values(f"it{i}/losses/real_matching", logs["matching"])
        outer = official[f"{prefix}it{i}/losses/look_ahead_ce"][-1]  # CE after the look-ahead: the meta objective
        comparison.errors["meta objective"] = abs(logs["meta_loss"] - outer) / abs(outer)
        for variable, gradient in zip(model.meta_variables, model.meta_optimizer.last_gradients):
            comparison.summary(f"it{i}/meta_gradient", names[id(variable)], to_official[id(variable)](gradient.numpy()))
        _compare_state(comparison, model, layout, f"it{i}", probe)
        comparison.check(f"at iteration {i} ({setting}, meta lr {meta_learning_rate:g})")


@pytest.mark.parametrize("run", range(len(state_lib.META_LEARNING_RATES)))
def test_iterations_equal_the_authors_code(official, float64, run):
    _replay(official, f"meta_lr{run}/", "cifar100", state_lib.batches())


def test_the_224_setting_equals_the_authors_code(official, float64):
    # ResNet-34 -> ResNet-18, the 16 pairs, at 224 (the authors' ResNets pool 7x7: 224 only), batch 2, meta lr 1e-4.
    _replay(official, "resnet/", "dog", state_lib.resnet_batches())
