"""DragGAN on a StyleGAN2 generator: drag handle points to targets, the image stays on the manifold.

    from draggan import DragConfig, DragSession, load_generator
    G = load_generator("celeba128")                 # registry name, local file/folder or URL
    drag = DragSession(G, G.ws_from_seed(3, 0.7))
    drag.set_points([(60, 70)], [(70, 70)])         # handles -> targets, image pixels (x, y)
    for state in drag.drag():                       # one DragState per step; drag.stop() ends it
        print(state.step, state.distances)
    image = drag.render()                           # HxWx3 uint8

See engine.DragConfig for every setting and engine.DragSession for undo, reset and masks.
"""

from .checkpoints import load_generator
from .engine import DragConfig, DragSession, DragState, default_feature_block
from .motion import motion_supervision_loss
from .networks import Generator, GeneratorConfig
from .tracking import track_points

__all__ = ["load_generator", "Generator", "GeneratorConfig", "DragConfig", "DragSession", "DragState",
           "default_feature_block", "motion_supervision_loss", "track_points"]
