"""The loss terms of L2T-ww (docs/method.md §3) and of the hand-crafted baselines (§5), as plain functions on tensors.

They are used inside the differentiated look-ahead, so they must not be Keras
`Loss` objects (those rescale by the replica count under a strategy).
"""

import keras
from keras import ops


def at_least_float32(x):
    """Casts float16/bfloat16 to float32 (losses stay float32 under mixed precision); keeps float64."""
    return ops.cast(x, keras.backend.result_type(x.dtype, "float32"))


def cross_entropy(labels, logits):
    """Mean sparse softmax cross-entropy over the batch."""
    return ops.mean(
        ops.sparse_categorical_crossentropy(labels, at_least_float32(logits), from_logits=True)
    )


def weighted_matching_loss(channel_diffs, beta, channel_weights=None, pair_weights=None):
    """β-weighted feature-matching loss of one pair.

    Args:
        channel_diffs: (B, C) per-channel mean squared error (`FeatureMatching`).
        beta: The matching weight β.
        channel_weights: (B, C) *what* weights w (sum to 1 over C), or None.
        pair_weights: (B,) *where* weights λ, or None (λ = 1, L2T-w).

    Returns:
        L2T-ww: β·mean_b(λ_b·Σ_c w_bc·diff_bc). With w=None (unweighted FM, the
        official w=λ=None branch): β·mean_{b,c} diff_bc.
    """
    if channel_weights is None:
        if pair_weights is not None:
            raise ValueError("pair_weights need channel_weights (the official code has no such branch).")
        return beta * ops.mean(channel_diffs)
    per_sample = ops.sum(channel_weights * channel_diffs, axis=-1)
    if pair_weights is not None:
        per_sample = pair_weights * per_sample
    return beta * ops.mean(per_sample)


def attention_map(features):
    """Activation-based attention Q of NHWC maps (Zagoruyko & Komodakis, ICLR 2017).

    Q = mean_c(x_c²) flattened over positions and L2-normalised per sample:
    shape (B, H·W). This is the reference `at(x) =
    F.normalize(x.pow(2).mean(1).view(B, -1))`: the norm is clipped at 1e-12,
    so an all-zero (post-ReLU) map gives zeros, not NaN.
    """
    features = at_least_float32(features)
    energy = ops.mean(ops.square(features), axis=-1)
    energy = ops.reshape(energy, (ops.shape(energy)[0], -1))
    norm = ops.sqrt(ops.sum(ops.square(energy), axis=-1, keepdims=True))
    return energy / ops.maximum(norm, 1e-12)


def attention_transfer_loss(source_features, target_features):
    """AT loss of one (source, target) pair: mean over (batch, positions) of (Q_s − Q_t)².

    The reference `at_loss`; the caller applies β/2 and sums over pairs. When
    the spatial sizes differ, the *source* feature map is bilinearly resized to
    the target's before its attention is taken (docs/method.md §5; as for feature
    matching, the target is never resized).
    """
    # Imported here: keras_l2t.layers imports this module.
    from keras_l2t.layers.feature_matching import resize_to  # pylint: disable=import-outside-toplevel

    height, width = target_features.shape[1], target_features.shape[2]
    source_features = resize_to(at_least_float32(source_features), height, width)
    return ops.mean(ops.square(attention_map(source_features) - attention_map(target_features)))


def distillation_loss(student_logits, teacher_logits, temperature):
    """T²·KL(softmax(teacher/T) ‖ softmax(student/T)), summed over classes, mean over the batch.

    The reduction is PyTorch's 'batchmean', the true per-sample KL: the old
    `F.kl_div(..., reduction='mean')` of L2T-ww's first commit and of early AT
    code (docs/method.md §5) also divides by the number of classes K, a bug that
    silently shrinks the term by K. The T² factor (Hinton et al., 2015) keeps
    the gradient's scale independent of T. The teacher is a constant (its
    gradient is stopped). The KL differs from LwF's soft cross-entropy
    −Σ p_t log p_s by the teacher's entropy only (same gradient, but 0 at a
    perfect match); LwF has no T², so this weighs the term T² times more.
    """
    temperature = float(temperature)
    teacher = ops.stop_gradient(at_least_float32(teacher_logits)) / temperature
    student = at_least_float32(student_logits) / temperature
    teacher_log_probs = ops.log_softmax(teacher, axis=-1)
    student_log_probs = ops.log_softmax(student, axis=-1)
    kl = ops.sum(ops.exp(teacher_log_probs) * (teacher_log_probs - student_log_probs), axis=-1)
    return temperature**2 * ops.mean(kl)
