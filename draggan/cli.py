"""Command line: ``python -m draggan {edit,sample,models,deploy-space}``.

    python -m draggan models
    python -m draggan deploy-space me/draggan-studio --dry-run   # the files a Space gets (draggan.space)
    python -m draggan sample --model celeba128 --seeds 0-9,20 --out samples/
    python -m draggan edit --model celeba128 --seed 3 --points "60,70->70,70;40,50->40,45" \\
        --out edited.png --video drag.gif
    python -m draggan edit --inversion runs/me/ --photo-points "412,630->404,611" --out edited.png
        # an inverted photo, points in the photo's own pixels: edited.png is the photo at its own
        # resolution (motion transfer); --points takes the generator's square instead,
        # --square-out writes the generator's image, --photo-mode paste the old paste-back

Bad input (an unparsable --points string, a point outside the image, a model
that cannot be found, ...) prints one ``error:`` line and exits with status 2;
no traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from inversion.edit import PhotoEdit
from inversion.errors import InversionError
from inversion.pipeline import INVERSION_GENERATOR, INVERSION_LATENT

from . import space
from .drawing.video import VIDEO_FORMATS, VideoError, drag_frame, write_video
from .engine import PRESETS, TRACKINGS, DragConfig, DragConfigError, MaskError, to_uint8
from .engine.points import PointError, parse_points
from .loaders import CheckpointError, load_generator, registry
from .runtime import DeviceError, default_device, runtime_for

EXIT_USAGE = 2


class CLIError(Exception):
    """A user error found after argument parsing; the message is shown as is."""


# --------------------------------------------------------------------------- argument types


def seed_list(text: str) -> list[int]:
    """``"0-9,20,30-32"`` -> [0, 1, ..., 9, 20, 30, 31, 32] (order kept, duplicates dropped)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise argparse.ArgumentTypeError(f"empty item in seed list {text!r} (expected e.g. '0-9,20,30-32')")
        lo, sep, hi = part.partition("-")
        try:
            start = int(lo)
            end = int(hi) if sep else start
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a seed or a range: expected non-negative integers like '7' or '0-9'") from None
        if start < 0 or end < 0:
            raise argparse.ArgumentTypeError(f"seeds must be non-negative, got {part!r}")
        if end < start:
            raise argparse.ArgumentTypeError(f"range {part!r} is backwards: write '{end}-{start}'")
        seeds.extend(range(start, end + 1))
    return list(dict.fromkeys(seeds))


def points_spec(text: str):
    try:
        return parse_points(text)
    except PointError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m draggan",
                                     description="DragGAN Studio: drag-based editing on a StyleGAN2 generator.")
    sub = parser.add_subparsers(dest="command", metavar="{edit,sample,models,deploy-space}")
    sub.required = True

    edit = sub.add_parser("edit", help="drag handle points to targets and save the result",
                          description="Drag handle points to targets on a generated (or inverted) image.")
    src = edit.add_argument_group("image source (either --model and --seed, or --inversion)")
    src.add_argument("--model", help="registry name (see `models`), checkpoint path, or directory")
    src.add_argument("--seed", type=int, help="seed of the generated image")
    src.add_argument("--truncation", type=float, default=0.7, help="truncation psi (default 0.7)")
    src.add_argument("--inversion", metavar="DIR",
                     help=f"output of the inversion pipeline: DIR/{INVERSION_LATENT} + DIR/{INVERSION_GENERATOR}/")
    points = edit.add_mutually_exclusive_group(required=True)
    points.add_argument("--points", type=points_spec, metavar='"x,y->x,y;..."',
                        help='handle->target pairs in the generator\'s pixels (for --inversion: the aligned square, '
                             'inv/aligned.png), separated by ";", e.g. "60,70->70,70;40,50->40,45"')
    points.add_argument("--photo-points", type=points_spec, metavar='"x,y->x,y;..."',
                        help="with --inversion: handle->target pairs in the original photo's pixels (upright, EXIF "
                             "orientation applied, as an image viewer shows it)")
    edit.add_argument("--mask", metavar="PNG",
                      help="mask image: white = may move, black = keep; a mask of the photo's size (with --inversion) "
                           "is read in photo pixels, any other is resized to the generator's image")
    # Drag settings: unset ones come from the preset (engine.PRESETS, over DragConfig's defaults).
    edit.add_argument("--preset", choices=sorted(PRESETS), default="local",
                      help="local: only the region around the points (or the mask) changes (default); "
                           "paper: DragGAN as published, the whole image may change")
    edit.add_argument("--region-radius", type=positive_float,
                      help=f"local edits without a mask: radius of the region around each drag, as a fraction of "
                           f"the image side (default {DragConfig.region_radius})")
    edit.add_argument("--tracking", choices=TRACKINGS,
                      help="how handles are followed: nn = DragGAN's nearest-neighbour search (default), "
                           "line = FreeDrag's feature dragging along the handle->target line")
    edit.add_argument("--steps", type=positive_int, help=f"maximum optimization steps (default {DragConfig.max_steps})")
    edit.add_argument("--lr", type=positive_float, help=f"Adam learning rate (default {DragConfig.lr:g})")
    edit.add_argument("--r1", type=positive_float, help="motion supervision radius in pixels (default 3*R/512, >=1)")
    edit.add_argument("--r2", type=positive_float, help="tracking window radius in pixels (default 12*R/512, >=2)")
    edit.add_argument("--lambda-mask", type=float,
                      help=f"weight of the mask term (default {DragConfig.lambda_mask:g})")
    edit.add_argument("--feature-block", type=positive_int,
                      help="synthesis block whose features are used (default: 6 from 512 px up, else the "
                           "block at half the resolution, e.g. 5 for 128 px)")
    edit.add_argument("--space", choices=["w", "w+"], help=f"latent space to optimize (default {DragConfig.latent_space})")
    edit.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    edit.add_argument("--out", required=True,
                      help="output PNG; with --inversion, the edited photo at the photo's own resolution")
    edit.add_argument("--square-out", metavar="PNG",
                      help="with --inversion: also write the generator-resolution image (the edited square)")
    edit.add_argument("--photo-mode", choices=["motion", "paste", "none"], default="motion",
                      help="with --inversion: how the edit reaches the photo: 'motion' (default) moves the photo's "
                           "own pixels as the drag moved the generator's; 'paste' pastes the edited square back "
                           "(for edits that change appearance); 'none' writes the square to --out")
    edit.add_argument("--confidence-out", metavar="PNG",
                      help="with --inversion and motion: the photo with the moved region and the generator's own "
                           "pixels marked")
    edit.add_argument("--video", metavar="OUT.mp4|OUT.gif",
                      help="also write the drag as an animation (for an inverted photo: the photo moving, as the "
                           "app's canvas shows it)")
    edit.add_argument("--square-video", metavar="OUT.mp4|OUT.gif",
                      help="with --inversion: also the drag on the generator's square")
    edit.add_argument("--fps", type=positive_float, default=24.0, help="animation frame rate (default 24)")
    edit.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    edit.set_defaults(func=cmd_edit)

    sample = sub.add_parser("sample", help="write images for a list of seeds",
                            description="Generate one PNG per seed.")
    sample.add_argument("--model", required=True, help="registry name (see `models`), checkpoint path, or directory")
    sample.add_argument("--seeds", required=True, type=seed_list, help='seeds, e.g. "0-99" or "0-9,20,30-32"')
    sample.add_argument("--truncation", type=float, default=0.7, help="truncation psi (default 0.7)")
    sample.add_argument("--device", help="cpu or cuda (default: cuda if available)")
    sample.add_argument("--out", required=True, help="output directory")
    sample.set_defaults(func=cmd_sample)

    models = sub.add_parser("models", help="list the known models", description="List the known models.")
    models.set_defaults(func=cmd_models)

    space = sub.add_parser("deploy-space", help="upload the app as a Hugging Face Space",
                           description="Upload exactly the files a Space needs (the app, its two packages, the "
                                       "bundled models' inference files, a README and requirements written for "
                                       "the hardware) with huggingface_hub; files already in the Space that are "
                                       "not among them are removed. Uses HF_TOKEN or your `hf auth login`.")
    space.add_argument("repo_id", metavar="OWNER/NAME", help="the Space, e.g. me/draggan-studio")
    space.add_argument("--dry-run", action="store_true",
                       help="only list the files, one per line, then their count and size (no token, no network)")
    space.add_argument("--out", metavar="DIR", help="with --dry-run: also write the files into DIR (new or empty), "
                                                    "to try the Space locally: cd DIR && python app.py")
    space.add_argument("--private", action="store_true", help="make a new Space private")
    space.add_argument("--hardware", default="cpu-basic",
                       help="cpu-basic (free, default), cpu-upgrade, zero-gpu, or a GPU such as t4-small or l4x1; "
                            "CPU hardware gets a CPU build of torch")
    space.set_defaults(func=cmd_deploy_space)
    return parser


# --------------------------------------------------------------------------- helpers


def pick_device(name: str | None):
    try:
        return default_device(name)
    except DeviceError as e:
        raise CLIError(f"--device: {e}") from None


def load_model(source: str, device):
    """A generator by registry name, path or URL (draggan.loaders), its problems as CLIErrors."""
    try:
        return load_generator(source, device=device)
    except CheckpointError as e:
        raise CLIError(str(e)) from None


def load_edit(directory: str, config: DragConfig, device, prepare) -> PhotoEdit:
    """The PhotoEdit of an inversion folder (``python -m inversion``'s output). Without photo.png and
    alignment.json it edits the generator's square, with a warning: the edit is then written at its size."""
    try:
        edit = PhotoEdit.load(directory, config, device=device, prepare=prepare)
    except InversionError as e:
        raise CLIError(f"--inversion: {e}") from None
    if not edit.has_photo:
        print(f"warning: {directory} holds no photo.png and alignment.json: writing the generator's image, "
              "not the edited photo", file=sys.stderr)
    return edit


def load_mask(path: str, resolution: int, photo_size: tuple[int, int] | None = None) -> tuple[np.ndarray, str]:
    """A mask PNG as a bool array (True = may move) and its coordinates: 'photo' when it has the photo's
    ``photo_size``, else 'square' (resized with nearest neighbour to resolution x resolution)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("L")
            if photo_size is not None and im.size == tuple(photo_size):
                return np.asarray(im) >= 128, "photo"
            if im.size != (resolution, resolution):
                im = im.resize((resolution, resolution), Image.NEAREST)
            return np.asarray(im) >= 128, "square"
    except FileNotFoundError:
        raise CLIError(f"--mask {path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise CLIError(f"--mask {path}: not a readable image ({e})") from None


def save_image(image: np.ndarray, path) -> Path:
    """Save an HxWx3 uint8 image; the extension picks the format (PNG recommended)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        Image.fromarray(image).save(path)
    except ValueError as e:  # Pillow: unknown extension
        raise CLIError(f"cannot save {path}: {e} (use a .png file name)") from None
    return path


def format_point(p) -> str:
    return "(" + ", ".join(f"{v:g}" for v in np.round(np.asarray(p, dtype=float), 2)) + ")"


def format_handle_table(start, final, targets, distances) -> str:
    """The handles' start, final and target positions and remaining distances, one row each."""
    rows = [("handle", "start", "final", "target", "distance")]
    for i, (s, f, t, d) in enumerate(zip(start, final, targets, distances), start=1):
        rows.append((str(i), format_point(s), format_point(f), format_point(t), f"{float(d):.2f}"))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


# --------------------------------------------------------------------------- commands


def cmd_edit(args) -> int:
    coordinates = "photo" if args.photo_points else "square"
    handles, targets = args.photo_points or args.points
    if args.inversion and (args.model or args.seed is not None):
        raise CLIError("use either --inversion DIR, or --model with --seed, not both")
    if not args.inversion and (args.model is None or args.seed is None):
        raise CLIError("tell me which image to edit: --model NAME --seed N, or --inversion DIR")
    for option, path in (("--video", args.video), ("--square-video", args.square_video)):
        if path and Path(path).suffix.lower() not in VIDEO_FORMATS:
            raise CLIError(f"{option} {path}: the animation must end in .gif or .mp4")
    if args.square_video and not args.inversion:
        raise CLIError("--square-video goes with --inversion (for a generated face, --video is the square)")
    if args.seed is not None and args.seed < 0:
        raise CLIError(f"--seed must be non-negative, got {args.seed}")
    if not args.inversion and (args.square_out or args.confidence_out or args.photo_points):
        raise CLIError("--photo-points, --square-out and --confidence-out are for --inversion DIR (an inverted photo)")
    device = pick_device(args.device)

    chosen = {"lr": args.lr, "max_steps": args.steps, "r1": args.r1, "r2": args.r2, "lambda_mask": args.lambda_mask,
              "feature_block": args.feature_block, "latent_space": args.space, "region_radius": args.region_radius,
              "tracking": args.tracking}
    # The app's runtime policy (bf16 where it is fast), so the same points give the same drag in both.
    runtime = runtime_for(device)
    config = DragConfig.preset(args.preset, autocast=runtime.autocast,
                               **{k: v for k, v in chosen.items() if v is not None})
    if args.inversion:
        edit = load_edit(args.inversion, config, device, runtime.prepare)
        if coordinates == "photo" and not edit.has_photo:
            raise CLIError(f"--photo-points: {args.inversion} holds no photo.png and alignment.json to map photo "
                           "pixels to the generator's; give --points in the generator's pixels instead")
    else:
        G = runtime.prepare(load_model(args.model, device))
        edit = PhotoEdit.from_latent(G, G.ws_from_seed(args.seed, args.truncation, device=device), config,
                                     device=device)
    edit.set_points(handles, targets, coordinates)
    if args.mask:
        edit.set_mask(*load_mask(args.mask, edit.resolution, edit.photo_size if edit.has_photo else None))

    videos = bool(args.video or args.square_video)
    first = drag_frame(edit.square(), *edit.points("square"), edit.mask) if videos else None
    start = edit.points("square")[0]
    state = None
    t0 = time.perf_counter()
    for state in edit.run(image_every=1 if videos else 0):
        if state.warning:
            print(f"warning: {state.warning}", file=sys.stderr)
        if not args.quiet:
            print(f"\rstep {state.step:4d}  loss {state.loss:.4f}  max distance {state.distances.max():6.2f}",
                  end="", file=sys.stderr, flush=True)
    if not args.quiet and state is not None:
        print(file=sys.stderr)
    elapsed = time.perf_counter() - t0

    square = edit.square()
    note = ""
    if edit.has_photo and args.photo_mode != "none":
        result = edit.photo_frame(args.photo_mode)
        out = save_image(np.asarray(result.image), args.out)
        what = "motion transfer" if result.mode == "motion" else "pasted back"
        note = (f" (the photo, {edit.photo_size[0]}x{edit.photo_size[1]}, {what}: {result.changed} pixels changed "
                f"in {result.seconds['total']:.2f} s)")
        if args.confidence_out and result.mode == "motion":
            save_image(np.asarray(result.confidence_overlay()), args.confidence_out)
            note += f", {args.confidence_out}"
    else:
        out = save_image(square, args.out)
    if args.square_out:
        save_image(square, args.square_out)
        note += f", {args.square_out} (the generator's {square.shape[1]} px image)"
    if args.square_video or (args.video and not edit.has_photo):
        write_video(args.square_video or args.video, [first] + edit.square_video_frames(), fps=args.fps)
    if args.video and edit.has_photo:   # the photo moving, as the app's canvas and its export show it
        write_video(args.video, edit.photo_video_frames(edit.view()), fps=args.fps)
    steps = state.step if state else 0
    verdict = "all handles reached their targets" if state and state.done else "stopped at the step limit"
    final, targets_now = edit.points(coordinates)
    distances = edit.session.distances
    if coordinates == "photo":
        start = [tuple(p) for p in edit.square_to_photo(start)]
        distances = distances / edit.square_per_photo_pixel
    print(format_handle_table(start, final, targets_now, distances))
    print(f"{verdict} after {steps} steps ({elapsed:.1f} s on {device}); wrote {out}{note}"
          + "".join(f" and {v}" for v in (args.video, args.square_video) if v)
          + ("; points and distances in photo pixels" if coordinates == "photo" else ""))
    return 0


def cmd_sample(args) -> int:
    device = pick_device(args.device)
    G = load_model(args.model, device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        for seed in args.seeds:
            ws = G.ws_from_seed(seed, args.truncation, device=device)
            image = to_uint8(G.synthesis(ws, noise_mode="const"))
            save_image(image, out / f"seed{seed:04d}.png")
    print(f"wrote {len(args.seeds)} image(s) to {out}")
    return 0


def cmd_models(args) -> int:
    print(registry.format_model_table())
    return 0


def cmd_deploy_space(args) -> int:
    if args.out and not args.dry_run:
        raise CLIError("--out goes with --dry-run (a deploy writes its files to a temporary folder)")
    space.check_repo_id(args.repo_id)
    if args.dry_run:
        files = space.plan(args.hardware)
        print(space.format_plan(files))
        if args.out:
            space.stage(files, args.out)
        return 0
    print(f"deployed: {space.deploy(args.repo_id, args.hardware, args.private)}")
    return 0


# --------------------------------------------------------------------------- entry point


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean 'bad input', shown as one line instead of a traceback."""

    return CLIError, PointError, DragConfigError, MaskError, VideoError, CheckpointError, space.SpaceError


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except user_errors() as e:
        print(f"{parser.prog} {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
