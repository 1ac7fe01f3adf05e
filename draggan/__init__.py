"""DragGAN on a StyleGAN2 generator: drag handle points to targets; the generator draws the edit.

    from draggan import DragConfig, DragSession, load_generator
    G = load_generator("celeba128")                 # registry name, local file/folder or URL
    drag = DragSession(G, G.ws_from_seed(3, 0.7))
    drag.set_points([(60, 70)], [(70, 70)])         # handles -> targets, image pixels (x, y)
    for state in drag.drag():                       # one DragState per step; drag.stop() ends it
        print(state.step, state.distances)
    image = drag.render()                           # HxWx3 uint8

The package, by role: ``models`` (the network), ``loaders`` (checkpoints, registry, downloads),
``engine`` (the drag, its settings and its live stream), ``drawing`` (views and videos),
``app`` (per-tab state of the web app), ``runtime`` (device and precision policy), ``cli``.
See engine.DragConfig for every setting and engine.DragSession for undo, reset and masks.
"""

from .engine import DragConfig, DragSession, DragState, default_feature_block, motion_supervision_loss, track_points
from .loaders import load_generator
from .models import Generator, GeneratorConfig

__all__ = ["load_generator", "Generator", "GeneratorConfig", "DragConfig", "DragSession", "DragState",
           "default_feature_block", "motion_supervision_loss", "track_points"]
