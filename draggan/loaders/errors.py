"""What loading a checkpoint can go wrong with, in words a user can read.

A leaf module: every loader imports it, it imports none of them.
"""

from __future__ import annotations

import re
import zipfile


class CheckpointError(Exception):
    """A checkpoint could not be found, fetched, trusted or converted (message says why)."""


def plain_load_failure(e: BaseException) -> str:
    """What a failed ``torch.load`` or unpickling means, as a clause a user can read.

    PyTorch's own texts name C++ sources ("[enforce fail at inline_container.cc:180]"), ask for bug
    reports, and some advise re-running ``torch.load`` with ``weights_only`` switched off, the unsafe
    path that runs code from the file: none of that may reach a user. What the file asked for (a
    global such as ``posix.system``) is kept, since it tells the user why the file was refused.
    """
    text = str(e)
    low = text.lower()
    wanted = re.search(r"unsupported global:?\s*(?:global\s+)?([A-Za-z_][\w.]*)", text, re.IGNORECASE)
    if wanted:
        return (f"refused to load: the file asks for '{wanted[1]}', which is not part of a StyleGAN2 checkpoint "
                "(loading it could run arbitrary code). Nothing from the file was executed")
    if isinstance(e, (EOFError, zipfile.BadZipFile)) or any(w in low for w in (
            "central directory", "corrupt", "truncated", "ran out of input", "unexpected eof", "pickle data was",
            "invalid header", "failed reading", "enforce fail", "not in a subdirectory", "unsupported operand",
            "unpickler error", "pickle data", "unpickling stack", "load key")):
        return ("the file is truncated or damaged (not a complete checkpoint). Download or copy it again; "
                "only plain tensors and containers are accepted from checkpoints")
    if isinstance(e, MemoryError):
        return "the file is too large to load with the memory this machine has"
    return ("the file is not a StyleGAN2 checkpoint that can be read safely (only plain tensors and containers "
            "are accepted, nothing that runs code). Check that it is the generator file you meant")


__all__ = ["CheckpointError", "plain_load_failure"]
