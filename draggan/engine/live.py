"""A drag for a live view: the steps on one thread, the frames rendered on another.

Drawing a frame never holds up the next step, so the frame rate is bounded by the
slower of the two, not by their sum (see :func:`live_drag`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from typing import Callable, Iterator

import numpy as np
import torch

from .session import DragSession, DragState, finish_frame, render_state


@dataclasses.dataclass
class LiveEvent:
    """What :func:`live_drag` reports: a rendered ``frame``, or the ``end`` of the drag."""

    kind: str                       # 'frame', 'warning' or 'end'
    state: DragState | None         # the step the frame shows; for 'end', the last step (None: no step)
    image: np.ndarray | None = None
    text: str | None = None         # 'warning': what the engine recovered from
    derived: object = None          # 'frame': what live_drag's on_frame made of it (None without one)


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the body with ``count`` torch intra-op threads on *this* OS thread (None: leave as is).

    torch's CPU thread count (OpenMP's) belongs to the calling thread, and every new
    thread starts with one per core, whatever the main thread set. Workers that share
    the cores (a drag's stepper and renderer, a server's handler threads) must each
    set their own, or two-core ops from two threads on two cores slow each other down.
    """
    if not count:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(count))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def live_drag(drag: DragSession, max_steps: int | None = None, frame_interval: float = 0.0,
              join_timeout: float = 30.0, worker_threads: int | None = None,
              frames: str = "auto", first_frame_threads: int | None = None,
              on_frame: Callable[[DragState, np.ndarray], object] | None = None) -> Iterator[LiveEvent]:
    """Run ``drag.drag()`` and stream frames while it runs.

    A stepper thread takes the optimization steps; a renderer thread draws the
    latest step's frame whenever it is free (and at most once per
    ``frame_interval`` seconds), so the frame rate is bounded by the slower of
    the two, not by their sum. A frame is yielded as soon as it is drawn, the
    engine's recovery messages as ``warning`` events; the last event is ``end``
    (the caller draws the final image). Errors of either thread are raised
    here. Closing the iterator stops the drag.

    ``frames``: ``'full'`` renders the latent after the step; ``'partial'``
    finishes the step's own forward pass (:func:`~draggan.engine.finish_frame`:
    the blocks after the feature block only, about half a render on the
    bundled model), which shows the latent the step started from, the very
    image its handles were tracked in. Its first frame would repeat the image
    on screen, so it is skipped. ``'auto'``: partial on CPUs, where a render
    costs as much as a step; full on GPUs, where both are cheap.

    ``worker_threads``: torch intra-op threads of each of the two workers (None:
    torch's default for a new thread, one per core). On a CPU give each half the
    cores (see :func:`torch_threads`): two threads of two-thread ops on two cores
    fight over them. ``first_frame_threads``: the stepper's threads until it hands
    over the first frame (until then the renderer has nothing to draw, so the
    stepper may take every core and the first frame comes sooner).

    ``on_frame(state, image)``: more work per frame (a view derived from the frame, such as
    the edited photo), run on the renderer thread right after the frame is drawn, so that it
    never holds up a step either; its result is the event's ``derived``.
    """
    if frames == "auto":
        frames = "full" if drag.device.type == "cuda" else "partial"
    if frames not in ("full", "partial"):
        raise ValueError(f"frames must be 'auto', 'full' or 'partial', got {frames!r}")
    partial = frames == "partial"
    # Set up here, so that errors surface at once.
    steps = drag.drag(max_steps=max_steps, image_every=0, partial_frames=partial)
    events: queue.Queue = queue.Queue()
    latest: list = []                  # [(state, ws or PartialFrame)] waiting to be drawn; newer replaces older
    wake = threading.Condition()
    finished = threading.Event()

    def stepper():
        last = None
        first_pending = bool(first_frame_threads)
        if first_pending:
            torch.set_num_threads(int(first_frame_threads))   # with_threads restores it on exit
        try:
            for i, state in enumerate(steps):
                last = state
                if state.warning:
                    events.put(("warning", state.warning))
                if partial and i == 0:
                    continue                # the start image: already on screen
                # Between steps the session's lock is free.
                snapshot = state.partial_frame if partial else drag.frame_state()
                with wake:
                    latest[:] = [(state, snapshot)]
                    wake.notify()
                if first_pending:          # the renderer starts now: share the cores from here on
                    first_pending = False
                    torch.set_num_threads(int(worker_threads or first_frame_threads))
        except BaseException as e:         # handed to the consumer
            events.put(("error", e))
        finally:
            steps.close()
            finished.set()
            with wake:
                wake.notify()
            events.put(("steps_done", last))

    def draw(state):   # a full frame: the session's replayed graph where it has one
        return drag.render_frame(state) if drag.graphs_frames else render_state(drag.G, state, drag.config)

    def renderer():
        last_start = -float("inf")
        try:
            while True:
                with wake:
                    while not latest and not finished.is_set():
                        wake.wait()
                if finished.is_set():
                    return                      # the caller draws the final image
                delay = last_start + frame_interval - time.perf_counter()
                if delay > 0 and finished.wait(delay):
                    return
                with wake:                      # the newest step, after any wait
                    state, what = latest.pop()
                last_start = time.perf_counter()
                # Neither takes the session's lock: the next step runs meanwhile.
                image = finish_frame(drag.G, what, drag.config) if partial else draw(what)
                derived = None if on_frame is None else on_frame(state, image)
                events.put(("frame", state, image, derived))
        except BaseException as e:
            events.put(("error", e))

    def with_threads(work):  # torch's thread count is per OS thread: each worker sets its own
        def run():
            with torch_threads(worker_threads):
                work()
        return run

    threads = [threading.Thread(target=with_threads(stepper), name="drag-steps", daemon=True),
               threading.Thread(target=with_threads(renderer), name="drag-frames", daemon=True)]
    for t in threads:
        t.start()
    try:
        while True:
            kind, *payload = events.get()
            if kind == "error":
                raise payload[0]
            if kind == "warning":
                yield LiveEvent("warning", None, text=payload[0])
                continue
            if kind == "frame":
                yield LiveEvent("frame", payload[0], payload[1], derived=payload[2])
                continue
            # steps_done: wait for the renderer, then report the end.
            threads[1].join(join_timeout)
            while not events.empty():
                kind, *rest = events.get_nowait()
                if kind == "error":
                    raise rest[0]
            yield LiveEvent("end", payload[0])
            return
    finally:
        drag.stop()
        finished.set()
        with wake:
            wake.notify()
        for t in threads:
            t.join(join_timeout)


__all__ = ["LiveEvent", "live_drag", "torch_threads"]
