"""Loading generators: ``load_generator(name | path | url)``.

``errors`` (what can go wrong, in plain words) and ``convert`` (helpers every converter shares) are
leaves; ``nvidia_pickle`` and ``rosinality`` convert the official formats; ``registry`` names the
known models and ``download`` fetches and caches them; ``checkpoints`` ties them together.
"""

from . import registry
from .checkpoints import load_generator, load_generator_file, resolve_source
from .download import DownloadError
from .errors import CheckpointError, plain_load_failure

__all__ = ["CheckpointError", "DownloadError", "load_generator", "load_generator_file", "plain_load_failure",
           "registry", "resolve_source"]
