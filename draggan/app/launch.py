"""Serving the app: the local server first, the model warm-up beside it, a share link last.

On ZeroGPU the warm-up stays before the launch: ``spaces`` hands the GPU workers the models
loaded by then.

Gradio's ``launch(share=True)`` prints its own advice when the link cannot be made (a missing
frpc file and antivirus software; "set share=True in launch()" otherwise). Here the local server starts
without it, and the link is asked for afterwards, so a failure says what a user of this app
needs to know: the app is still served locally, and what a share link takes.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from urllib.parse import urlparse, urlunparse

from ..loaders.errors import CheckpointError


def share_link(demo) -> str:
    """A public gradio.live link to the launched ``demo``: what ``launch(share=True)`` does (Gradio's tunnel)."""
    from gradio import networking

    url = networking.setup_tunnel(local_host=demo.server_name, local_port=demo.server_port,
                                  share_token=demo.share_token, share_server_address=demo.share_server_address,
                                  share_server_tls_certificate=demo.share_server_tls_certificate)
    return urlunparse((demo.share_server_protocol,) + urlparse(url)[1:])


def share_failure(local_url: str, error: BaseException) -> str:
    """What to tell a user whose share link could not be made."""
    from gradio import tunneling

    binary = tunneling.BINARY_PATH
    have = "is there" if os.path.exists(binary) else "is missing"
    return (f"No share link: {error} ({type(error).__name__}).\n"
            f"The app is still served at {local_url} (this machine, or its network with --host 0.0.0.0).\n"
            f"A share link needs internet access to Gradio's share server (gradio.live) and Gradio's tunnel "
            f"program frpc at {binary} (it {have}; Gradio downloads it there on first use). Without them, "
            f"publish the app as a Hugging Face Space instead: python -m draggan deploy-space OWNER/NAME.")


def on_zero_gpu() -> bool:
    """Whether this is a ZeroGPU Space (Hugging Face sets SPACES_ZERO_GPU there)."""
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true", "yes")


def warm_up(studio, label: str, background: bool = True) -> threading.Thread | None:
    """Load ``label`` and run the studio's warm-up drag; with ``background``, on a thread, so the server
    answers at once (a request that needs the model meanwhile waits for the same load: ModelPool loads
    each model once). A failure is a warning: it costs the first visitor some seconds, not the app."""

    def run():
        t0 = time.perf_counter()
        try:
            studio.warm_up(label)
            print(f"* {label} loaded and warmed up in {time.perf_counter() - t0:.1f} s", flush=True)
        except CheckpointError as e:
            print(f"warning: {e}")
        except Exception:
            print("warning: the warm-up failed; the app goes on without it:\n" + traceback.format_exc())

    if not background:
        run()
        return None
    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread


def serve(demo, host=None, port=None, share=False, block=True, **launch_options) -> str | None:
    """Launch ``demo`` (then, with ``share``, a public link) and, with ``block``, serve until interrupted.
    Returns the share link, or None. GRADIO_SHARE=true asks for a link too, as it does of Gradio's launch()."""
    share = share or os.environ.get("GRADIO_SHARE", "").lower() == "true"
    demo.launch(server_name=host, server_port=port, share=False, prevent_thread_lock=True, quiet=True,
                **launch_options)
    print(f"* Running on {demo.local_url}", flush=True)
    link = None
    if share:
        try:
            link = demo.share_url = share_link(demo)
            demo.share = True
            print(f"* Public link: {link} (for up to a week; anyone with it can use this app)", flush=True)
        except Exception as e:  # offline, no tunnel program, share server down: the local app goes on
            print(share_failure(demo.local_url, e), flush=True)
    if block:
        demo.block_thread()
    return link
