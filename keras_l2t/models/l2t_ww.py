"""`L2TWW`: learning what and where to transfer, as a `keras.Model` that `fit` drives.

One `train_step` (docs/method.md §4.1) on a batch (x, y):

1. Source features (frozen source, inference mode), their per-pair resized
   maps and global-average pools are computed once; the meta-networks' outputs
   w (what) and λ (where) once from the pools, and reused by every step below.
2. Real step of θ = target + regressors on CE + Σ_pairs β·L^{m,n}(w, λ), with
   PyTorch-semantics SGD; BatchNorm statistics are committed from this step only.
3. Look-ahead from the new θ: T matching-only SGD steps and one CE step, run
   functionally (`stateless_call` on tensors, never `assign`), then the outer
   loss CE(f_{θ_{T+1}}(x), y). Its gradient with respect to w and λ (nested
   `tf.GradientTape`s: exact second order), chained to φ, feeds one
   meta-optimizer step. The look-ahead tensors are dropped: θ keeps only
   the real step (the official rollback).
4. BatchNorm running statistics are updated a second time from the same
   batch at the updated θ, as the official `meta_backward` does when it
   replays the first look-ahead step (`second_statistics_update`).

Modes: "l2t_ww" (learned w and λ), "l2t_w" (learned w, λ = 1), "fm"
(unweighted feature matching, no meta-networks, no look-ahead). With
`learn_meta_networks=False` the meta-networks stay at their initial φ and no
meta step runs: the control that tells learned what/where from matching with
fixed random pair weights (method `l2t_ww_frozen`).

Under a `tf.distribute` strategy a step on R replicas equals the one-device
step on the global batch: the look-ahead's inner gradients are all-reduced,
BatchNorm is synchronized and losses sent to `optimizer.apply` are divided by
R (`keras_l2t.distribute`). Under mixed precision the real step computes in 16
bits; the meta-networks, the look-ahead and the meta-gradient stay float32
(`keras_l2t.precision`; docs/method.md §4.8), unless
`full_precision_look_ahead=False` lets the look-ahead compute in 16 bits too.
"""

import contextlib
import math

import keras
import tensorflow as tf
from keras import ops

from keras_l2t import distribute, losses, precision
from keras_l2t import pairs as pairs_lib
from keras_l2t.layers.feature_matching import FeatureMatching, resize_to
from keras_l2t.layers.normalization import exact_normalizations
from keras_l2t.layers.meta_networks import ChannelWeightNetwork, PairWeightNetwork
from keras_l2t.models import recompute
from keras_l2t.models.source_target import SourceTargetModel
from keras_l2t.optimizers.adam import AdamL2
from keras_l2t.optimizers.sgd import SGD, sgd_momentum_step
from keras_l2t.sources.stack import pair_label

TRANSFER_MODES = ("l2t_ww", "l2t_w", "fm")


@keras.saving.register_keras_serializable(package="keras_l2t")
class L2TWW(SourceTargetModel):
    """Transfers from a frozen source `Backbone` to a target `Backbone` (Jang et al., ICML 2019).

    `call` returns the target's logits, so `evaluate`, `predict` and export
    behave as for the target alone.

    Args:
        source: Pretrained source `Backbone`; frozen (never trained).
        target: Target `Backbone` to train.
        pairs: Pair spec (`keras_l2t.pairs.parse_pairs`): "all" (default),
            "one_to_one", "single", "m-n,..." ("k:m-n,..." with several
            sources) or a sequence of (m, n).
        sources: Instead of `source`, several source `Backbone`s (a
            `SourceStack`): pairs draw from every source's taps, each pair's
            meta-networks see its own source's features, and the logs name
            each pair's source (`lambda_<source>_m_n`).
        mode: "l2t_ww", "l2t_w" (λ fixed at 1) or "fm" (unweighted matching).
        beta: Matching weight β (0.5).
        inner_steps: T, look-ahead matching steps (2).
        first_order: Drop the Hessian-in-θ chain between look-ahead steps
            (keeps ∂g_t/∂φ); cheaper, approximate.
        meta_every: Meta-update every k-th step (1: every step, as official).
        recompute_look_ahead: Compute the meta-gradient with reverse adjoints
            that recompute each look-ahead step (the official `meta_backward`,
            `keras_l2t.models.recompute`): the same gradient, one step's graph
            in memory at a time instead of T+1, one more forward and backward
            per step (docs/profile.md).
        pair_weight_activation: "relu6" (official), "relu" or "relu_avg".
        pair_weight_init: Initial bias of the where-nets (1.0).
        learn_meta_networks: False keeps w and λ at their initial values (no
            look-ahead, no meta step; the same θ updates as a meta learning
            rate of 0, at the cost of feature matching).
        second_statistics_update: After the meta step, update the target's
            BatchNorm running statistics a second time from the same batch at
            the updated θ (True, default: the official code's `meta_backward`
            replays the first look-ahead step in training mode and keeps its
            statistics). False updates them once per step, from the real step
            only. Only what uses running statistics changes (evaluation,
            export); the frozen control does it too, so that it stays the
            run at meta learning rate 0. Not in mode "fm" (no meta step).
        full_precision_look_ahead: Under a mixed dtype policy, run the
            look-ahead at the variable dtype (True, default: exact to float32
            round-off) or in the policy's 16-bit compute dtype (False: faster
            where the CPU or GPU has 16-bit units, an approximate meta-gradient,
            docs/method.md §4.8). No effect without mixed precision.

    Example:
    ```python
    model = keras_l2t.L2TWW(source, target, pairs="all")
    model.compile(optimizer=keras_l2t.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-4),
                  meta_optimizer=keras_l2t.optimizers.AdamL2(1e-4, weight_decay=1e-4))
    model.fit(train_ds, validation_data=val_ds, epochs=200)
    ```
    """

    def __init__(
        self,
        source=None,
        target=None,
        pairs="all",
        mode="l2t_ww",
        beta=0.5,
        inner_steps=2,
        first_order=False,
        meta_every=1,
        pair_weight_activation="relu6",
        pair_weight_init=1.0,
        recompute_look_ahead=False,
        learn_meta_networks=True,
        full_precision_look_ahead=True,
        second_statistics_update=True,
        **kwargs,
    ):
        super().__init__(source, target, **kwargs)
        source = self.source  # a SourceStack where `sources=[...]` was passed
        if mode not in TRANSFER_MODES:
            raise ValueError(f"mode must be one of {TRANSFER_MODES}, got {mode!r}.")
        # The meta-gradient differentiates the target twice: Keras' own BN/LN drop a term of that.
        exact_normalizations(self.target)
        if inner_steps < 0 or meta_every < 1 or beta < 0:
            raise ValueError("inner_steps must be >= 0, meta_every >= 1 and beta >= 0.")
        self.pairs = pairs_lib.parse_pairs(pairs, source, target)
        self.mode = mode
        self.beta = float(beta)
        self.inner_steps = int(inner_steps)
        self.first_order = bool(first_order)
        self.meta_every = int(meta_every)
        self.recompute_look_ahead = bool(recompute_look_ahead)
        self.pair_weight_activation = pair_weight_activation
        self.pair_weight_init = float(pair_weight_init)
        self.learn_meta_networks = bool(learn_meta_networks)
        self.full_precision_look_ahead = bool(full_precision_look_ahead)
        self.second_statistics_update = bool(second_statistics_update)

        source_channels, target_channels = source.feature_channels, target.feature_channels
        # The meta-networks are tiny and their gradients are the meta-gradient:
        # they compute at the variable dtype even under mixed precision.
        meta_dtype = self.dtype_policy.variable_dtype
        self.matchers = []
        self.channel_weight_nets = []
        self.pair_weight_nets = []
        for m, n in self.pairs:
            matcher = FeatureMatching(source_channels[m], target_channels[n], name=f"matching_{m}_{n}")
            matcher.build()
            self.matchers.append(matcher)
            if mode in ("l2t_ww", "l2t_w"):
                what = ChannelWeightNetwork(source_channels[m], dtype=meta_dtype, name=f"what_{m}_{n}")
                what.build((None, source_channels[m]))
                self.channel_weight_nets.append(what)
            if mode == "l2t_ww":
                where = PairWeightNetwork(
                    source_channels[m], pair_weight_activation, pair_weight_init, dtype=meta_dtype,
                    name=f"where_{m}_{n}",
                )
                where.build((None, source_channels[m]))
                self.pair_weight_nets.append(where)

        self.ce_tracker = keras.metrics.Mean(name="ce")
        self.matching_tracker = keras.metrics.Mean(name="matching")
        self.meta_loss_tracker = keras.metrics.Mean(name="meta_loss")
        self.meta_gradient_norm_tracker = keras.metrics.Mean(name="meta_gradient_norm")
        self.entropy_tracker = keras.metrics.Mean(name="channel_weight_entropy")
        self.pair_weight_trackers = [
            keras.metrics.Mean(name=f"lambda_{pair_label(source, pair)}") for pair in self.pairs
        ]
        self.meta_optimizer = None
        self.built = True

    # ------------------------------------------------------------------ API

    @property
    def has_meta_networks(self):
        """Whether w (and λ) come from meta-networks (every mode but "fm")."""
        return self.mode != "fm"

    @property
    def uses_meta_learning(self):
        """Whether the meta-networks are trained (and so a look-ahead and a meta step run)."""
        return self.has_meta_networks and self.learn_meta_networks

    @property
    def theta_variables(self):
        """θ: the target's trainable variables, then the regressors' (pair order)."""
        return list(self.target.trainable_variables) + [
            v for matcher in self.matchers for v in matcher.trainable_variables
        ]

    @property
    def meta_variables(self):
        """φ, ordered by pair: what-net kernel, bias, then where-net kernel, bias."""
        variables = []
        for p in range(len(self.pairs)):
            if self.channel_weight_nets:
                variables += self.channel_weight_nets[p].trainable_variables
            if self.pair_weight_nets:
                variables += self.pair_weight_nets[p].trainable_variables
        return variables

    def compile(self, optimizer=None, meta_optimizer=None, loss=None, metrics=None, jit_compile=False, **kwargs):
        """Configures training.

        Args:
            optimizer: θ's optimizer; must be `keras_l2t.optimizers.SGD` (the
                look-ahead reproduces its rule). Default: SGD(0.1, 0.9, 1e-4).
            meta_optimizer: φ's optimizer. Default: AdamL2(1e-4, wd 1e-4).
            loss: Loss for `evaluate` (default: sparse CE from logits).
            metrics: Metrics (default: accuracy).
            jit_compile: XLA for the steps (default False: slower on CPU, docs/method.md §4.8).
                Not with a multi-replica `tf.distribute` strategy: XLA cannot
                compile the look-ahead's cross-replica all-reduces. XLA's
                max-pool second derivative selects maxima at bfloat16
                precision, which moves meta-gradients through max-pools by up
                to ~1 % (docs/internals.md).
            **kwargs: Passed to `keras.Model.compile`.

        Under a `tf.distribute` strategy, create and compile the model inside
        `strategy.scope()`. Under the `mixed_float16` policy Keras wraps
        `optimizer` in a `LossScaleOptimizer` (`theta_optimizer` is the SGD
        inside).
        """
        optimizer = SGD(0.1, momentum=0.9, weight_decay=1e-4) if optimizer is None else optimizer
        if not isinstance(optimizer, SGD):
            raise TypeError(
                "L2TWW needs keras_l2t.optimizers.SGD for θ: the look-ahead reproduces its "
                f"update rule and reads its momentum buffers (got {type(optimizer).__name__})."
            )
        if meta_optimizer is None and self.uses_meta_learning:
            meta_optimizer = AdamL2(1e-4, weight_decay=1e-4)
        if jit_compile is True and self.distribute_strategy.num_replicas_in_sync > 1:
            raise ValueError(
                "jit_compile=True does not work with a multi-replica tf.distribute strategy: XLA cannot "
                "compile the cross-replica all-reduces of the look-ahead (docs/method.md §4.8). Use one or the other."
            )
        if loss is None:
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        if metrics is None:
            metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, jit_compile=jit_compile, **kwargs)
        self.meta_optimizer = meta_optimizer
        # Built now with the right variables, so that saving and BackupAndRestore
        # find both optimizers' slots before the first step (keras#19389).
        self.optimizer.build(self.theta_variables)
        if self.meta_optimizer is not None:
            self.meta_optimizer.build(self.meta_variables)

    @property
    def theta_optimizer(self):
        """θ's `keras_l2t.optimizers.SGD`, unwrapped from Keras' `LossScaleOptimizer` (mixed_float16)."""
        return getattr(self.optimizer, "inner_optimizer", self.optimizer)

    def get_compile_config(self):
        config = super().get_compile_config() or {}
        config["meta_optimizer"] = keras.saving.serialize_keras_object(self.meta_optimizer)
        return config

    def source_statistics(self, x):
        """What the meta-networks see of images x (the frozen source's per-pair maps and pools).

        Fixed for fixed images, since the source never trains: callbacks that
        look at the same batch every epoch compute it once (`transfer_weights`).
        """
        return self._source_statistics(x)

    def transfer_weights(self, x=None, statistics=None):
        """Meta-network outputs on images x: {"pairs", "channel_weights", "pair_weights"} (lists per pair).

        `statistics`, from `source_statistics(x)`, replaces x and saves the source's forward pass.
        """
        statistics = self._source_statistics(x) if statistics is None else statistics
        channel_weights, pair_weights = self._meta_outputs(statistics)
        return {"pairs": self.pairs, "channel_weights": channel_weights, "pair_weights": pair_weights}

    def meta_objective(self, x, y):
        """Outer loss CE(f_{θ_{T+1}}(x), y) after the look-ahead from the current state; changes no state."""
        return self._meta_objective_and_gradients(x, y, with_gradients=False)[0]

    def meta_gradients(self, x, y):
        """d meta_objective / d meta_variables (list, same order); changes no state.

        In a replica of a `tf.distribute` strategy, each replica returns its
        share: the shares sum to the gradient of the global-batch objective.
        """
        return self._meta_objective_and_gradients(x, y, with_gradients=True)[1]

    # ------------------------------------------------------------ internals

    def _source_statistics(self, x):
        """Per-pair source maps resized to their target tap, and per-pair pooled sources.

        At least float32: a mixed-precision source's 16-bit features are cast
        up once here, so matching losses and meta-networks see float32.
        """
        _, features = self.source(x, training=False, return_features=True)
        features = [losses.at_least_float32(ops.stop_gradient(f)) for f in features]
        target_shapes = self.target.feature_shapes
        maps, pooled = [], []
        for m, n in self.pairs:
            maps.append(resize_to(features[m], target_shapes[n][0], target_shapes[n][1]))
            pooled.append(ops.mean(features[m], axis=(1, 2)))
        return {"maps": maps, "pooled": pooled}

    def _meta_outputs(self, statistics):
        """(channel weights per pair or None, pair weights per pair or None)."""
        pooled = statistics["pooled"]
        channel_weights = [net(pooled[p]) for p, net in enumerate(self.channel_weight_nets)] or None
        pair_weights = [net(pooled[p]) for p, net in enumerate(self.pair_weight_nets)] or None
        return channel_weights, pair_weights

    def _forward(self, theta, non_trainable, x, statistics, channel_weights, pair_weights, with_matching):
        """Functional target + regressors at θ = `theta`: (logits, matching loss, new non-trainables)."""
        num_target = len(self.target.trainable_variables)
        (logits, features), new_non_trainable = self.target.stateless_call(
            theta[:num_target], non_trainable, x, training=True, return_features=True
        )
        matching = 0.0
        if with_matching:
            offset = num_target
            for p, (matcher, (_, n)) in enumerate(zip(self.matchers, self.pairs)):
                size = len(matcher.trainable_variables)
                diffs, _ = matcher.stateless_call(theta[offset : offset + size], [], statistics["maps"][p], features[n])
                offset += size
                matching += losses.weighted_matching_loss(
                    diffs,
                    self.beta,
                    None if channel_weights is None else channel_weights[p],
                    None if pair_weights is None else pair_weights[p],
                )
        return logits, matching, new_non_trainable

    def _update_statistics_again(self, x):
        """The official second BatchNorm-statistics update: a training-mode forward at the current θ."""
        theta, _, non_trainable = self._current_state()
        _, _, new_non_trainable = self._forward(theta, non_trainable, x, None, None, None, with_matching=False)
        for variable, value in zip(self.target.non_trainable_variables, new_non_trainable):
            variable.assign(value)

    @property
    def _updates_statistics_twice(self):
        return self.second_statistics_update and self.has_meta_networks

    def _sgd_step(self, theta, grads, buffers, learning_rate):
        optimizer = self.theta_optimizer
        return sgd_momentum_step(
            theta, grads, buffers, learning_rate, optimizer.momentum, optimizer.coupled_weight_decay
        )

    def _look_ahead_objective(self, x, y, statistics, meta_outputs, theta, buffers, non_trainable, learning_rate):
        """CE after T matching-only steps and one CE step from (θ, buffers); differentiable in w, λ.

        Must run under the caller's tape: each inner tape's gradient is itself
        recorded, which is what makes the meta-gradient second order.
        """

        def inner_step(theta, buffers, with_matching):
            evaluated_at = [ops.stop_gradient(t) for t in theta] if self.first_order else theta
            grads = self._inner_gradient(evaluated_at, x, y, statistics, meta_outputs, non_trainable, with_matching)
            return self._sgd_step(theta, grads, buffers, learning_rate)

        for _ in range(self.inner_steps):
            theta, buffers = inner_step(theta, buffers, with_matching=True)
        theta, buffers = inner_step(theta, buffers, with_matching=False)
        logits, _, _ = self._forward(theta, non_trainable, x, statistics, None, None, with_matching=False)
        return losses.cross_entropy(y, logits)

    def _inner_gradient(self, theta, x, y, statistics, meta_outputs, non_trainable, with_matching):
        """Gradient at θ of one look-ahead step's loss (matching only, or CE), averaged over replicas."""
        with tf.GradientTape() as inner_tape:
            inner_tape.watch(theta)
            logits, matching, _ = self._forward(theta, non_trainable, x, statistics, *meta_outputs, with_matching)
            inner_loss = matching if with_matching else losses.cross_entropy(y, logits)
        # Under tf.distribute: the gradient of the global-batch loss, on
        # every replica (a per-replica look-ahead is another estimator).
        return distribute.all_reduce_mean(inner_tape.gradient(inner_loss, theta))

    def _recomputed_output_gradients(
        self, x, y, statistics, meta_outputs, flat_outputs, theta, buffers, non_trainable, learning_rate, scale_loss
    ):
        """`recompute_look_ahead`: (objective, its gradient with respect to `flat_outputs`) by reverse adjoints."""
        optimizer = self.theta_optimizer

        def step_gradient(t, theta):
            with_matching = t < self.inner_steps
            return self._inner_gradient(theta, x, y, statistics, meta_outputs, non_trainable, with_matching)

        def outer_loss(theta):
            logits, _, _ = self._forward(theta, non_trainable, x, statistics, None, None, with_matching=False)
            objective = losses.cross_entropy(y, logits)
            differentiated = distribute.scale_for_apply(objective)
            return objective, differentiated if scale_loss is None else scale_loss(differentiated)

        return recompute.adjoint_meta_gradient(
            step_gradient, outer_loss, theta, buffers, flat_outputs, self.inner_steps + 1, learning_rate,
            optimizer.momentum, optimizer.coupled_weight_decay, first_order=self.first_order,
            depends_on_meta=lambda t: t < self.inner_steps,
        )

    def _current_state(self):
        theta = [tf.convert_to_tensor(v) for v in self.theta_variables]
        buffers = [tf.convert_to_tensor(self.theta_optimizer.momentum_buffer(v)) for v in self.theta_variables]
        non_trainable = [tf.convert_to_tensor(v) for v in self.target.non_trainable_variables]
        return theta, buffers, non_trainable

    def _meta_outputs_with_tape(self, statistics):
        """The meta-networks' outputs, and the tape that links them to φ."""
        with tf.GradientTape() as phi_tape:
            meta_outputs = self._meta_outputs(statistics)
        return meta_outputs, phi_tape

    def _look_ahead_precision(self):
        """The look-ahead's layers at their variable dtype (a no-op with `full_precision_look_ahead=False`)."""
        if not self.full_precision_look_ahead:
            return contextlib.nullcontext()
        layers = list(self.target._flatten_layers())  # pylint: disable=protected-access
        for matcher in self.matchers:
            layers += list(matcher._flatten_layers())  # pylint: disable=protected-access
        return precision.full_precision(layers)

    def _meta_objective_and_gradients(
        self, x, y, with_gradients, statistics=None, meta_outputs=None, phi_tape=None, learning_rate=None,
        scale_loss=None,
    ):
        """The outer loss after the look-ahead and (optionally) its gradient with respect to φ.

        Backpropagation runs in two stages: through the look-ahead to the
        meta-network outputs (w, λ), then from them to φ through `phi_tape`, so
        the meta-networks are evaluated once per batch. The look-ahead runs at
        the variable dtype even under mixed precision (docs/method.md §4.8: a 16-bit
        look-ahead moves the meta-gradient by 6-15 %), so it needs no loss
        scaling; with `full_precision_look_ahead=False` it runs in 16 bits, also
        unscaled (prefer bfloat16 there: float16 gradients may underflow).
        Under R replicas the differentiated objective is divided by R (Keras
        sums the replicas' gradients), then by `scale_loss` if given.
        """
        if not self.has_meta_networks:
            raise ValueError("mode='fm' has no meta-networks and no meta-objective.")
        if self.optimizer is None:
            raise ValueError("Call compile() first: the look-ahead uses the optimizer's rule and state.")
        statistics = self._source_statistics(x) if statistics is None else statistics
        if meta_outputs is None:
            meta_outputs, phi_tape = self._meta_outputs_with_tape(statistics)
        learning_rate = self.optimizer.learning_rate if learning_rate is None else learning_rate
        theta, buffers, non_trainable = self._current_state()
        flat_outputs = [t for group in meta_outputs if group is not None for t in group]
        learning_rate = ops.cast(learning_rate, theta[0].dtype)
        if with_gradients and self.recompute_look_ahead:
            with self._look_ahead_precision():
                objective, output_grads = self._recomputed_output_gradients(
                    x, y, statistics, meta_outputs, flat_outputs, theta, buffers, non_trainable, learning_rate,
                    scale_loss,
                )
        else:
            with tf.GradientTape() as meta_tape:
                meta_tape.watch(flat_outputs)
                with self._look_ahead_precision():
                    objective = self._look_ahead_objective(
                        x, y, statistics, meta_outputs, theta, buffers, non_trainable, learning_rate
                    )
                differentiated = distribute.scale_for_apply(objective)
                if scale_loss is not None:
                    differentiated = scale_loss(differentiated)
            if not with_gradients:
                return objective, None
            output_grads = meta_tape.gradient(
                differentiated, flat_outputs, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
        return objective, phi_tape.gradient(flat_outputs, self.meta_variables, output_gradients=output_grads)

    def _meta_update(self, x, y, statistics, meta_outputs, phi_tape, learning_rate):
        # scale_loss: a LossScaleOptimizer or loss_scale_factor divides it out again in apply.
        objective, grads = self._meta_objective_and_gradients(
            x, y, True, statistics, meta_outputs, phi_tape, learning_rate, scale_loss=self.meta_optimizer.scale_loss
        )
        # The norm of the whole (summed over replicas, unscaled) meta-gradient.
        loss_scale = ops.cast(self.meta_optimizer.scale_loss(1.0), grads[0].dtype)
        gradient_norm = tf.linalg.global_norm(distribute.all_reduce_sum(grads)) / loss_scale
        self.meta_optimizer.apply(grads, self.meta_variables)
        if self._updates_statistics_twice:
            self._update_statistics_again(x)
        self.meta_loss_tracker.update_state(objective)
        self.meta_gradient_norm_tracker.update_state(gradient_norm)
        return objective

    def _meta_update_if_due_across_replicas(self, due, x, y, learning_rate):
        """`meta_every > 1` under a strategy: the meta update only on due steps.

        A `tf.cond` inside a replica cannot hold a `merge_call` (the meta
        optimizer's `apply` makes one, on any replica count, one included), so
        the condition is taken in cross-replica context (as Keras'
        `LossScaleOptimizer` does) and the due branch runs the meta update on
        every replica again; it recomputes the source statistics there.
        """

        def meta_update(x, y, learning_rate):
            statistics = self._source_statistics(x)
            meta_outputs, phi_tape = self._meta_outputs_with_tape(statistics)
            self._meta_update(x, y, statistics, meta_outputs, phi_tape, learning_rate)

        def merge_fn(strategy, due, x, y, learning_rate):
            due = strategy.experimental_local_results(due)[0]  # the same on every replica
            tf.cond(
                due,
                lambda: strategy.extended.call_for_each_replica(meta_update, args=(x, y, learning_rate)),
                lambda: None,
            )

        distribute.strategy_replica_context().merge_call(merge_fn, args=(due, x, y, learning_rate))

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        statistics = self._source_statistics(x)
        meta_outputs, phi_tape = self._meta_outputs_with_tape(statistics)
        channel_weights, pair_weights = meta_outputs
        if channel_weights is not None:
            channel_weights = [ops.stop_gradient(w) for w in channel_weights]
        if pair_weights is not None:
            pair_weights = [ops.stop_gradient(w) for w in pair_weights]

        # 1. The real step of θ: the only update θ and the BN statistics keep.
        learning_rate = self.optimizer.learning_rate
        theta, _, non_trainable = self._current_state()
        with tf.GradientTape() as tape:
            tape.watch(theta)
            logits, matching, new_non_trainable = self._forward(
                theta, non_trainable, x, statistics, channel_weights, pair_weights, with_matching=True
            )
            ce = losses.cross_entropy(y, logits)
            loss = ce + matching
            # 1/R: Keras sums the replicas' gradients; scale_loss: mixed_float16 loss scaling.
            scaled_loss = self.optimizer.scale_loss(distribute.scale_for_apply(loss))
        grads = tape.gradient(scaled_loss, theta)
        self.optimizer.apply(grads, self.theta_variables)
        for variable, value in zip(self.target.non_trainable_variables, new_non_trainable):
            variable.assign(value)

        # 2. The meta step on φ, through the look-ahead from the updated θ.
        if self.uses_meta_learning:
            if self.meta_every == 1:
                self._meta_update(x, y, statistics, meta_outputs, phi_tape, learning_rate)
            else:
                due = tf.equal((self.optimizer.iterations - 1) % self.meta_every, 0)
                if distribute.strategy_replica_context() is None:
                    tf.cond(
                        due,
                        lambda: self._meta_update(x, y, statistics, meta_outputs, phi_tape, learning_rate),
                        lambda: tf.constant(0.0, ce.dtype),
                    )
                else:
                    self._meta_update_if_due_across_replicas(due, x, y, tf.convert_to_tensor(learning_rate))
        elif self._updates_statistics_twice:
            self._update_statistics_again(x)  # the frozen control: as a meta learning rate of 0

        batch_size = ops.shape(y)[0]
        self._loss_tracker.update_state(loss, sample_weight=batch_size)
        self.ce_tracker.update_state(ce, sample_weight=batch_size)
        self.matching_tracker.update_state(matching, sample_weight=batch_size)
        if channel_weights is not None:
            entropies = [
                -ops.mean(ops.sum(w * ops.log(w + 1e-12), axis=-1)) / math.log(max(int(w.shape[-1]), 2))
                for w in channel_weights
            ]
            self.entropy_tracker.update_state(ops.mean(ops.stack(entropies)))
        if pair_weights is not None:
            for tracker, weights in zip(self.pair_weight_trackers, pair_weights):
                tracker.update_state(ops.mean(weights))
        return self.compute_metrics(x, y, logits, sample_weight=sample_weight)

    def _training_trackers(self):
        return [
            self.ce_tracker,
            self.matching_tracker,
            self.meta_loss_tracker,
            self.meta_gradient_norm_tracker,
            self.entropy_tracker,
            *self.pair_weight_trackers,
        ]

    @property
    def metrics(self):
        """Trackers shown in the logs: loss, ce, matching, accuracy, and the meta ones in use."""
        shown = list(super().metrics)
        hidden = set()
        if not self.uses_meta_learning:
            hidden.update(id(t) for t in [self.meta_loss_tracker, self.meta_gradient_norm_tracker])
        if not self.has_meta_networks:
            hidden.add(id(self.entropy_tracker))
        if not self.pair_weight_nets:
            hidden.update(id(t) for t in self.pair_weight_trackers)
        return [m for m in shown if id(m) not in hidden]

    # ---------------------------------------------------------------- config

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pairs": [list(p) for p in self.pairs],
                "mode": self.mode,
                "beta": self.beta,
                "inner_steps": self.inner_steps,
                "first_order": self.first_order,
                "meta_every": self.meta_every,
                "recompute_look_ahead": self.recompute_look_ahead,
                "pair_weight_activation": self.pair_weight_activation,
                "pair_weight_init": self.pair_weight_init,
                "learn_meta_networks": self.learn_meta_networks,
                "full_precision_look_ahead": self.full_precision_look_ahead,
                "second_statistics_update": self.second_statistics_update,
            }
        )
        return config
