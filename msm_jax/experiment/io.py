"""The plain file helpers the experiment layer uses, imported in this one place.

Issue 12 moves them from `data_pipelines` to a ground-floor package that both layers use; when it
lands, only these import lines change.
"""

from data_pipelines.files import atomic_write_bytes, atomic_write_text, read_jsonl  # noqa: F401
from data_pipelines.worlds.build import file_sha256  # noqa: F401
