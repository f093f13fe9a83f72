"""Offline data production for MSM: specs, synthetic documents, AFT chats, TFDS packing.

Data flows one way: `spec` -> `docgen` (stage tree, backends) -> `export` -> `tfds_builder`, and
`spec` -> `aft`. Nothing here imports `msm_jax` or jax (file I/O comes from `msm_io`, the floor
both sides share); the training side reads the files written here.
"""
