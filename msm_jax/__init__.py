"""msm-jax: Model Spec Midtraining in JAX."""

__version__ = "0.1.0"
