"""The offline template backend: deterministic by seed, built from the spec's own sentences."""
