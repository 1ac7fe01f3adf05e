"""The drag engine (DragGAN, Pan et al., SIGGRAPH 2023), knowing nothing of any UI.

``config`` (DragConfig, presets) -> ``session`` (DragSession: motion supervision, point tracking,
undo) built from ``features``, ``motion``, ``tracking`` (or ``line_search``, FreeDrag's), ``region`` (local edits),
``window`` (a local edit computed around its region only), ``points`` and ``cuda_graphs``; ``live`` streams a drag's
frames while it runs.
"""

from .config import PRESETS, TRACKINGS, DragConfig, DragConfigError, MaskError, default_feature_block, generator_autocast
from .live import LiveEvent, live_drag, torch_threads
from .motion import motion_supervision_loss, warp_supervision_loss
from .points import PointError, parse_points, validate_points
from .session import DragSession, DragState, EditState, PartialFrame, finish_frame, render_state, to_uint8
from .tracking import track_points

__all__ = ["DragConfig", "DragConfigError", "DragSession", "DragState", "EditState", "LiveEvent", "MaskError",
           "PRESETS", "PartialFrame", "PointError", "TRACKINGS", "default_feature_block", "finish_frame", "generator_autocast",
           "live_drag", "motion_supervision_loss", "parse_points", "render_state", "to_uint8", "torch_threads",
           "track_points", "validate_points", "warp_supervision_loss"]
