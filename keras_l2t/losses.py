"""The L2T-ww loss terms (method.md §3), written as plain functions on tensors.

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
