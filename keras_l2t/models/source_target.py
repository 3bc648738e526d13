"""`SourceTargetModel`: what every transfer model shares (a frozen source, a target, their config)."""

import keras

from keras_l2t.backbones.backbone import Backbone
from keras_l2t.errors import InputError
from keras_l2t.multi_worker_fit import MultiWorkerFitMixin
from keras_l2t.sources.stack import SourceStack


def check_source_and_target(source, target):
    """Raises unless both are `Backbone`s built for the same input size (both see the same images)."""
    if not isinstance(source, Backbone) or not isinstance(target, Backbone):
        raise InputError("source and target must be keras_l2t Backbones (see Backbone.from_keras_model).")
    source_hw, target_hw = source.image_shape[:2], target.image_shape[:2]
    if None not in source_hw + target_hw and source_hw != target_hw:
        raise InputError(
            f"Source input {source.image_shape} and target input {target.image_shape} differ: both "
            "networks see the same images, build them for the same input size."
        )


@keras.saving.register_keras_serializable(package="keras_l2t")
class SourceTargetModel(MultiWorkerFitMixin, keras.Model):
    """Base of the models that train a target `Backbone` with knowledge from a frozen source `Backbone`.

    It freezes the source, makes `call` return the target's logits (so
    `evaluate`, `predict` and export behave as for the target alone),
    (de)serialises both networks, and keeps training-only trackers (listed by
    `_training_trackers`) out of `evaluate`'s logs. Subclasses add their
    losses, `train_step`, `compile` and config entries. `fit` works on several
    machines (`MultiWorkerFitMixin`, a workaround for keras-team/keras#20585).

    Args:
        source: Pretrained source `Backbone`; frozen (never trained).
        target: Target `Backbone` to train.
        sources: Instead of `source`, a list of source `Backbone`s: they
            become one `SourceStack` (each at its own input size), whose taps
            pairs draw from ("k:m-n" names source k's tap m).
    """

    def __init__(self, source=None, target=None, sources=None, **kwargs):
        super().__init__(**kwargs)
        if (source is None) == (sources is None) or target is None:
            raise InputError("Pass a target and either source=Backbone or sources=[Backbone, ...].")
        if sources is not None:
            source = SourceStack.of(sources, target.image_shape[0])
        check_source_and_target(source, target)
        self.source = source
        self.source.trainable = False
        self.target = target

    def call(self, inputs, training=None):
        return self.target(inputs, training=training)

    def compile_from_config(self, config):
        # Keras' own skips models that override `compile`, as subclasses do.
        self.compile(**keras.saving.deserialize_keras_object(config))

    def _training_trackers(self):
        """Trackers that only `train_step` updates (hidden from `evaluate`)."""
        return []

    def test_step(self, data):
        logs = super().test_step(data)
        training_only = {t.name for t in self._training_trackers()}
        return {name: value for name, value in logs.items() if name not in training_only}

    def _get_metrics_result_or_logs(self, logs):
        # Keras reports its metrics' results at the end of `evaluate` only when the step's logs name
        # every metric, which `test_step` does not (it leaves the training trackers out); else it
        # reports the last step's logs, which on several replicas are the mean of each replica's
        # running mean: not the figure over the whole set when the last batch splits unevenly.
        metric_logs = self.get_metrics_result()
        if isinstance(logs, dict) and logs and set(logs) <= set(metric_logs):
            return {name: metric_logs[name] for name in logs}
        return logs

    def get_config(self):
        config = super().get_config()
        config["source"] = keras.saving.serialize_keras_object(self.source)
        config["target"] = keras.saving.serialize_keras_object(self.target)
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["source"] = keras.saving.deserialize_keras_object(config["source"])
        config["target"] = keras.saving.deserialize_keras_object(config["target"])
        return cls(**config)
