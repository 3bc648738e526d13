"""`HandCraftedTransfer`: the fixed-weight transfer baselines LwF, AT and LwF+AT (docs/method.md §5).

They share the target, data pipeline and trainer of L2T-ww but learn nothing
about what or where to transfer: a plain first-order step on

    CE(target(x), y) + [at]  β/2 · Σ_{(m,n)} mean_{b,pos}(Q(S^m) − Q(T^n))²
                     + [lwf] λ_o · T²·KL(softmax(s/T) ‖ softmax(h(x)/T))

with a frozen source (inference mode) giving S^m and its logits s, and, for
LwF, an extra head h on the target predicting the source's classes.
"""

import keras
import tensorflow as tf
from keras import ops

from keras_l2t import distribute, initializers, losses
from keras_l2t import pairs as pairs_lib
from keras_l2t.errors import InputError
from keras_l2t.models.source_target import SourceTargetModel
from keras_l2t.optimizers.sgd import SGD

HAND_CRAFTED_METHODS = ("at", "lwf", "lwf_at")


def uses_attention_transfer(method):
    """Whether `method` has the AT term (and so source-target pairs)."""
    return method in ("at", "lwf_at")


def uses_distillation(method):
    """Whether `method` has the LwF term (and so the extra head)."""
    return method in ("lwf", "lwf_at")


@keras.saving.register_keras_serializable(package="keras_l2t")
class HandCraftedTransfer(SourceTargetModel):
    """Trains a target `Backbone` with LwF and/or attention transfer from a frozen source.

    `call` returns the target's logits, so `evaluate` and `predict` behave as
    for the target alone.

    - **AT** (Zagoruyko & Komodakis, "Paying More Attention to Attention",
      ICLR 2017): β/2 · Σ over pairs of `losses.attention_transfer_loss`, the
      reference code's `β/2 * sum(at_loss(...))`, with its β = 1e3.
    - **LwF** (Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI
      2017): an extra `Dense(source.num_classes)` head on the global-average-
      pooled *last* target tap (the deepest features, i.e. the penultimate
      features of a ResNet; the official, unused `lwf_lyr` of VGG-9 / ResNet-32
      is a Linear of that size) learns the source's softened outputs on the
      new data: λ_o · `losses.distillation_loss` with T = 2, λ_o = 1 (LwF's
      values). The head is PyTorch-Linear initialised and trains with θ.
      Deviation: LwF's paper uses the soft cross-entropy without T²; the KL
      has the same gradient times T² = 4 (Hinton et al., 2015, add T² to keep
      the gradient scale independent of T): lwf_weight=0.25 gives LwF's.

    Args:
        source: Pretrained source `Backbone`; frozen, run in inference mode.
        target: Target `Backbone` to train.
        method: "at", "lwf" or "lwf_at".
        pairs: Pair spec for AT (`keras_l2t.pairs.parse_pairs`): default
            "one_to_one" (same-stage pairs, as in the AT paper). Ignored by
            "lwf".
        at_weight: β of AT (1e3).
        lwf_weight: λ_o of LwF (1.0).
        temperature: LwF's distillation temperature T (2.0).

    Example:
    ```python
    model = keras_l2t.models.HandCraftedTransfer(source, target, method="lwf_at")
    model.compile()  # SGD(0.1, momentum 0.9, wd 1e-4); any Keras optimizer works
    model.fit(train_ds, validation_data=val_ds, epochs=200)
    ```
    """

    def __init__(
        self, source=None, target=None, method="at", pairs="one_to_one", at_weight=1e3, lwf_weight=1.0,
        temperature=2.0, **kwargs
    ):
        super().__init__(source, target, **kwargs)
        source = self.source  # a SourceStack where `sources=[...]` was passed
        if method not in HAND_CRAFTED_METHODS:
            raise ValueError(f"method must be one of {HAND_CRAFTED_METHODS}, got {method!r}.")
        if uses_distillation(method) and (not source.has_classifier or len(getattr(source, "member_names", ())) > 1):
            raise InputError(
                f"{method} distils the source's class predictions: it needs one source with a classification head, "
                f"and {source.name} {'has none' if not source.has_classifier else 'stacks several sources'}; "
                "use fm, at, l2t_w or l2t_ww."
            )
        if at_weight < 0 or lwf_weight < 0 or temperature <= 0:
            raise ValueError("at_weight and lwf_weight must be >= 0 and temperature > 0.")
        self.method = method
        self.pairs = pairs_lib.parse_pairs(pairs, source, target) if uses_attention_transfer(method) else None
        self.at_weight = float(at_weight)
        self.lwf_weight = float(lwf_weight)
        self.temperature = float(temperature)
        self.lwf_head = None
        if uses_distillation(method):
            channels = target.feature_channels[-1]
            self.lwf_head = keras.layers.Dense(
                source.num_classes,
                kernel_initializer=initializers.torch_default_kernel(),
                bias_initializer=initializers.torch_default_bias(channels),
                name="lwf_head",
            )
            self.lwf_head.build((None, channels))

        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.at_tracker = keras.metrics.Mean(name="at")
        self.lwf_tracker = keras.metrics.Mean(name="lwf")
        self.built = True

    @property
    def theta_variables(self):
        """What trains: the target's trainable variables, then the LwF head's."""
        head = self.lwf_head.trainable_variables if self.lwf_head is not None else []
        return list(self.target.trainable_variables) + list(head)

    def compile(self, optimizer=None, loss=None, metrics=None, jit_compile=False, **kwargs):
        """Configures training.

        Args:
            optimizer: Any Keras optimizer (default: `keras_l2t.optimizers.SGD(0.1, 0.9, 1e-4)`,
                the official target optimizer).
            loss: Loss for `evaluate` (default: sparse CE from logits).
            metrics: Metrics (default: accuracy).
            jit_compile: XLA for the steps (default False: slower on CPU, docs/method.md §4.8).
            **kwargs: Passed to `keras.Model.compile`.
        """
        optimizer = SGD(0.1, momentum=0.9, weight_decay=1e-4) if optimizer is None else optimizer
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics is None:
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile, **kwargs)
        # Built now, so that saving and BackupAndRestore find its slots before the first step (keras#19389).
        self.optimizer.build(self.theta_variables)

    def transfer_losses(self, x, features):
        """The active weighted transfer terms, {"at": ..., "lwf": ...}, for the target's tap `features` on x."""
        source_logits, source_features = self.source(x, training=False, return_features=True)
        terms = {}
        if uses_attention_transfer(self.method):
            per_pair = [
                losses.attention_transfer_loss(ops.stop_gradient(source_features[m]), features[n])
                for m, n in self.pairs
            ]
            terms["at"] = self.at_weight / 2.0 * ops.sum(ops.stack(per_pair))
        if uses_distillation(self.method):
            head_logits = self.lwf_head(ops.mean(features[-1], axis=(1, 2)))
            distillation = losses.distillation_loss(head_logits, source_logits, self.temperature)
            terms["lwf"] = self.lwf_weight * distillation
        return terms

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.theta_variables
        with tf.GradientTape() as tape:
            logits, features = self.target(x, training=True, return_features=True)
            ce = losses.cross_entropy(y, logits)
            terms = self.transfer_losses(x, features)
            loss = ce + sum(terms.values())
            scaled_loss = self.optimizer.scale_loss(distribute.scale_for_apply(loss))
        grads = tape.gradient(scaled_loss, variables)
        self.optimizer.apply(grads, variables)

        batch_size = ops.shape(y)[0]
        self._loss_tracker.update_state(loss, sample_weight=batch_size)
        self.ce_tracker.update_state(ce, sample_weight=batch_size)
        for name, tracker in (("at", self.at_tracker), ("lwf", self.lwf_tracker)):
            if name in terms:
                tracker.update_state(terms[name], sample_weight=batch_size)
        return self.compute_metrics(x, y, logits, sample_weight=sample_weight)

    def _training_trackers(self):
        return [self.ce_tracker, self.at_tracker, self.lwf_tracker]

    @property
    def metrics(self):
        """Trackers shown in the logs: loss, ce, the active transfer terms, accuracy."""
        hidden = set()
        if not uses_attention_transfer(self.method):
            hidden.add(id(self.at_tracker))
        if not uses_distillation(self.method):
            hidden.add(id(self.lwf_tracker))
        return [m for m in super().metrics if id(m) not in hidden]

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "method": self.method,
                "pairs": None if self.pairs is None else [list(p) for p in self.pairs],
                "at_weight": self.at_weight,
                "lwf_weight": self.lwf_weight,
                "temperature": self.temperature,
            }
        )
        return config
