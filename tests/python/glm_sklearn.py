"""Fits scikit-learn's PoissonRegressor to a problem written by the Rust test and prints its
coefficients and predicted log-rates as JSON.

Usage: glm_sklearn.py PROBLEM.json
PROBLEM.json: {"x": [[...], ...], "y": [...], "alpha": a, "x_new": [[...], ...]}
"""

import json
import sys

import numpy as np
from sklearn.linear_model import PoissonRegressor


def main() -> None:
    with open(sys.argv[1]) as f:
        problem = json.load(f)
    x = np.asarray(problem["x"], dtype=np.float64)
    y = np.asarray(problem["y"], dtype=np.float64)
    x_new = np.asarray(problem["x_new"], dtype=np.float64)
    # Newton-Cholesky to a tight tolerance: the reference is the exact optimum of the
    # objective, not whatever the default solver reaches by its default tolerance.
    model = PoissonRegressor(
        alpha=problem["alpha"], solver="newton-cholesky", tol=1e-12, max_iter=1000
    )
    model.fit(x, y)
    json.dump(
        {
            "coef": model.coef_.tolist(),
            "intercept": float(model.intercept_),
            "log_rates": np.log(model.predict(x_new)).tolist(),
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
