"""The one error class both layers share: a failure the user can fix that has no class of its own.

It lives on the ground floor so the document generator can raise it without importing msm_jax;
`msm` prints it (like every user error) as one line (msm_jax/errors.py).
"""


class UserError(Exception):
  """A failure the user can fix, raised by code without an error class of its own."""
