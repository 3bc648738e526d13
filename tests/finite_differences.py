"""The meta-gradient against central finite differences of the meta-objective, one random direction per variable."""

import numpy as np


def assert_meta_gradient_matches(model, x, y, rng, eps=1e-6, rtol=1e-4, atol=0.0):
    """For each meta variable v: d/dε meta_objective(v + ε·d) at 0, central differences, equals ⟨gradient, d⟩.

    `atol` covers the differences' own round-off where a component is tiny;
    the model is left as it was.
    """
    grads = model.meta_gradients(x, y)
    for variable, grad in zip(model.meta_variables, grads, strict=True):
        direction = rng.normal(size=variable.shape)
        base = variable.numpy()
        variable.assign(base + eps * direction)
        plus = float(model.meta_objective(x, y))
        variable.assign(base - eps * direction)
        minus = float(model.meta_objective(x, y))
        variable.assign(base)
        numeric = (plus - minus) / (2 * eps)
        analytic = float(np.sum(grad.numpy() * direction))
        assert abs(analytic - numeric) <= rtol * abs(numeric) + atol, (variable.path, analytic, numeric)
