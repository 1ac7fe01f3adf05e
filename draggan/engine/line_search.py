"""Feature dragging along the handle->target line (after FreeDrag, Ling et al., CVPR 2024).

DragGAN re-finds each handle after every step by a nearest-neighbour search of
the first image's handle feature; when content changes that search can jump to
a look-alike (another eye corner, the other mouth corner). FreeDrag drops the
search. Each handle drags a *template* (the features of a small disk) to a goal
a short way along the straight line to its target:

    L_i = mean_{q, c} | F(g_i + q) - sg(T_i(q)) |          (q in the r1 disk)

When ``L_i`` has fallen to ``ACCEPT_RATIO`` of its value when the goal was set (or
of the first goal's), or after ``STEPS_PER_GOAL`` steps with some progress, the handle moves to the
goal, the template absorbs the new features with a weight that shrinks when the
motion was poor (adaptive template, so a failed step does not overwrite it),

    T_i <- lambda F(g_i + q) + (1 - lambda) T_i,   lambda = sigmoid(-ALPHA (L_i / L0_i - BETA)),

and the next goal is ``step`` pixels further along the line (the last one is
the target itself). A goal that made no progress is pulled halfway back towards
the handle (backtracking), and the step halves.

Everything is tensors of fixed shape updated with ``torch.where``, so a step
stays capturable as a CUDA graph like DragGAN's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .features import sample_features

ACCEPT_RATIO = 0.5     # a goal is reached when its template distance halved since the goal was set
PROGRESS_RATIO = 0.7   # after STEPS_PER_GOAL steps, accept a goal whose distance fell at least this far
STEPS_PER_GOAL = 6     # optimization steps spent on one goal before it is accepted or backtracked
ALPHA, BETA = 8.0, 0.7  # template update weight: near 1 for a goal reached cleanly, near 0 for a poor one
MIN_STEP_PX = 0.125    # backtracking stops halving here


@dataclass
class LineSearch:
    """Per-handle state of feature dragging, all [N, ...] tensors on the session's device."""

    templates: torch.Tensor   # [N, D, C] the features the goal disk should take on
    goals: torch.Tensor       # [N, 2] where the template is being dragged now
    goal_loss0: torch.Tensor  # [N] template distance at the goal when it was set
    first_loss: torch.Tensor  # [N] that of the first goal (scale of the template update weight)
    steps: torch.Tensor       # [N] steps spent on the current goal
    step_px: torch.Tensor     # [N] current step length along the line
    base_step_px: float


def patch_features(feat: torch.Tensor, centres: torch.Tensor, offsets: torch.Tensor, image_size: int) -> torch.Tensor:
    """Features of the disks ``centres + offsets``: [N, D, C] (fp32)."""
    return sample_features(feat, centres[:, None, :] + offsets[None], image_size).float()


def feature_distance(patch: torch.Tensor, templates: torch.Tensor) -> torch.Tensor:
    """``mean |patch - T|`` per handle over the disk and channels, [N]."""
    return (patch - templates).abs().mean(dim=(1, 2))


def template_distance(feat: torch.Tensor, goals: torch.Tensor, templates: torch.Tensor, offsets: torch.Tensor,
                      image_size: int) -> torch.Tensor:
    """``mean |F(goal + q) - T(q)|`` per handle, [N]; differentiable in ``feat``."""
    return feature_distance(patch_features(feat, goals, offsets, image_size), templates)


def next_goals(handles: torch.Tensor, targets: torch.Tensor, step_px: torch.Tensor) -> torch.Tensor:
    """``step_px`` along the line to the target, or the target itself when it is closer."""
    delta = targets - handles
    dist = delta.norm(dim=1, keepdim=True)
    return handles + delta * (step_px[:, None] / dist.clamp_min(1e-8)).clamp(max=1.0)


@torch.no_grad()
def start_line_search(feat0: torch.Tensor, handles: torch.Tensor, targets: torch.Tensor, offsets: torch.Tensor,
                      image_size: int, step_px: float) -> LineSearch:
    """Templates from the first image's disks around the handles; the first goals one step along the lines."""
    templates = patch_features(feat0, handles, offsets, image_size)
    steps = torch.full((handles.shape[0],), float(step_px), device=handles.device)
    goals = next_goals(handles, targets, steps)
    loss0 = template_distance(feat0, goals, templates, offsets, image_size).clamp_min(1e-6)
    return LineSearch(templates, goals, loss0, loss0.clone(), torch.zeros_like(loss0), steps, float(step_px))


@torch.no_grad()
def update_line_search(state: LineSearch, feat: torch.Tensor, goal_features: torch.Tensor, loss: torch.Tensor,
                       handles: torch.Tensor, targets: torch.Tensor, active: torch.Tensor, offsets: torch.Tensor,
                       image_size: int) -> torch.Tensor:
    """Advance, keep or pull back each active handle's goal from this step's features at the goals
    (``goal_features`` [N, D, C], sampled from ``feat``) and their template distances ``loss``; updates
    ``state`` in place and returns the new handle positions [N, 2]."""
    state.steps.add_(active.float())
    ratio = loss / state.goal_loss0
    out_of_steps = state.steps >= STEPS_PER_GOAL
    # Reached: the distance halved since the goal was set, or is as low as half the first goal's (a goal
    # set very close to the handle starts near the floor and cannot halve again).
    reached = (ratio <= ACCEPT_RATIO) | (loss <= ACCEPT_RATIO * state.first_loss)
    accept = active & (reached | (out_of_steps & (ratio <= PROGRESS_RATIO)))
    backtrack = active & out_of_steps & ~accept

    weight = torch.sigmoid(-ALPHA * (loss / state.first_loss - BETA))[:, None, None]
    blended = weight * goal_features + (1 - weight) * state.templates
    state.templates.copy_(torch.where(accept[:, None, None], blended, state.templates))

    new_handles = torch.where(accept[:, None], state.goals, handles)
    step = torch.where(accept, torch.full_like(state.step_px, state.base_step_px),
                       torch.where(backtrack, (state.step_px * 0.5).clamp_min(MIN_STEP_PX), state.step_px))
    state.step_px.copy_(step)
    moved = accept | backtrack
    state.goals.copy_(torch.where(moved[:, None], next_goals(new_handles, targets, step), state.goals))
    fresh = template_distance(feat, state.goals, state.templates, offsets, image_size).clamp_min(1e-6)
    state.goal_loss0.copy_(torch.where(moved, fresh, state.goal_loss0))
    state.steps.copy_(torch.where(moved, torch.zeros_like(state.steps), state.steps))
    return new_handles
