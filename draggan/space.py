"""The app as a Hugging Face Space: exactly the files it needs, uploaded with ``huggingface_hub``.

    python -m draggan deploy-space OWNER/NAME --dry-run     # what would be uploaded; no token, no network
    python -m draggan deploy-space OWNER/NAME --hardware cpu-basic

What a Space gets is computed from the checkout (its git-tracked files; every file where there
is no git): ``app.py``, ``LICENSE``, the ``.py`` files of the two packages the app imports
(``draggan``, ``inversion``), and each bundled model's inference files (``checkpoints/<model>/``:
safetensors, json and the model card, except the training state in ``resume/``), so a model
folder that gains a file (an encoder, say) brings it along. Two files are written for the Space:
its README (front matter + a short page, :data:`README_TEMPLATE`) and its requirements, which
take a CPU build of torch on CPU hardware. ``upload_folder`` sends large files through the Hub's
large-file storage, so no git-lfs is needed.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path, PurePosixPath

ROOT = Path(__file__).resolve().parents[1]

PACKAGES = ("draggan", "inversion")           # what app.py imports; training/ and bench/ stay home
TOP_FILES = ("app.py", "LICENSE")             # MIT asks for its notice in every copy
MODEL_SUFFIXES = (".safetensors", ".json")
MODEL_DOCS = ("MODEL_CARD.md",)               # the Space's page links them (licence, data)
TRAINING_STATE = "resume"                     # checkpoints/<model>/resume/: only training resumes from it
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_HARDWARE = ("cpu-basic", "cpu-upgrade")
ZERO_GPU = "zero-a10g"
HARDWARE_ALIASES = {"zero-gpu": ZERO_GPU, "cpu": "cpu-basic"}
TORCH_PACKAGES = ("torch", "torchvision")     # the packages with a CPU build on CPU_INDEX
NO_TOKEN = ("No Hugging Face token found. Log in with `hf auth login` (or `huggingface-cli login`), "
            "or set HF_TOKEN to a token with write access (huggingface.co/settings/tokens); "
            "--dry-run needs none.")

HARDWARE_NOTES = {
    "cpu": "a CPU, free on cpu-basic (2 vCPU, 16 GB): the bundled 128 px models stream a drag at a few "
           "frames per second and a photo is ready to edit in about a second (the model's encoder; 15-50 s with "
           "tuning); NVIDIA's 512 px models are slow there",
    ZERO_GPU: "ZeroGPU: each drag or inversion borrows a GPU while it runs (the app's `@spaces.GPU` handlers)",
    "gpu": "a GPU: drags stream at up to 15 frames per second, photos invert in seconds",
}

README_TEMPLATE = """\
---
title: DragGAN Studio
emoji: 🎯
colorFrom: indigo
colorTo: pink
sdk: gradio
sdk_version: {gradio}
python_version: "{python}"
app_file: app.py
suggested_hardware: {hardware}
pinned: false
license: other
short_description: Drag points on a photo; a StyleGAN2 keeps the edit real.
---

# DragGAN Studio

Drag-based editing of generated faces and real photos on a StyleGAN2 image manifold
([DragGAN](https://vcai.mpi-inf.mpg.de/projects/DragGAN/), Pan et al., SIGGRAPH 2023).

1. Press **New face**, or upload a photo of a face and press **Invert photo**.
2. Click the image: a handle (red), then its target (blue); repeat for more pairs. The **Mask** tab
   paints the region that may move.
3. **Start** drags the handles to their targets; **Stop**, **Undo drag** and **Reset** do what they say.
4. **Export** gives the edited PNG, its latent and a GIF of the drag.

This Space runs on {hardware_note}.

Models: {models}. They were trained on CelebA, for non-commercial research only; NVIDIA's models in
the menu download on demand under their own non-commercial licences. Code: MIT ([LICENSE](LICENSE)).
"""


class SpaceError(Exception):
    """A problem the user can fix (no token, unknown hardware, the Hub refusing); the message says how."""


@dataclasses.dataclass(frozen=True)
class SpaceFile:
    path: str                   # relative path in the Space (posix)
    size: int                   # bytes
    source: Path | None = None  # copied from the checkout ...
    text: str | None = None     # ... or written for the Space


# --------------------------------------------------------------------------- which files


def checkout_files(root: Path = ROOT) -> list[str]:
    """The checkout's files as relative posix paths: git-tracked ones in a git checkout (no build output,
    no local runs), otherwise every file under ``root``."""
    if (root / ".git").exists():
        try:
            out = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], check=True, capture_output=True,
                                 text=True).stdout
            return [p for p in out.split("\0") if p and (root / p).is_file()]
        except (OSError, subprocess.CalledProcessError):
            pass  # no git here: fall through to the filesystem
    return [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]


def is_space_file(path: str) -> bool:
    """Whether the Space needs this checkout file (see the module docstring)."""
    parts = PurePosixPath(path).parts
    if "__pycache__" in parts:
        return False
    if len(parts) == 1:
        return path in TOP_FILES
    if parts[0] in PACKAGES:
        return path.endswith(".py")
    if parts[0] == "checkpoints" and len(parts) >= 3:
        return TRAINING_STATE not in parts[2:-1] and (PurePosixPath(path).suffix in MODEL_SUFFIXES
                                                      or parts[-1] in MODEL_DOCS)
    return False


def hardware_flavor(name: str) -> str:
    """The Hub's name for ``--hardware`` (``zero-gpu`` is ``zero-a10g``); an unknown one is a SpaceError."""
    from huggingface_hub import SpaceHardware

    flavor = HARDWARE_ALIASES.get(name, name)
    known = [h.value for h in SpaceHardware]
    if flavor not in known:
        raise SpaceError(f"--hardware {name}: not a Space hardware; choose zero-gpu or one of {', '.join(known)}")
    return flavor


def plan(hardware: str = "cpu-basic", root: Path = ROOT) -> list[SpaceFile]:
    """Every file of the Space, sorted by path: the checkout's (:func:`is_space_file`) and the two written
    for it (README.md, requirements.txt)."""
    hardware = hardware_flavor(hardware)
    if not (root / "app.py").is_file():
        raise SpaceError(f"no app.py in {root}: deploy-space uploads a checkout of DragGAN Studio (an installed "
                         "package has neither app.py nor the models); run it from a clone")
    files = [SpaceFile(p, (root / p).stat().st_size, source=root / p)
             for p in checkout_files(root) if is_space_file(p)]
    models = sorted({PurePosixPath(f.path).parts[1] for f in files if f.path.endswith("/model.safetensors")})
    for path, text in (("README.md", render_readme(hardware, models, root)),
                       ("requirements.txt", render_requirements(hardware, root))):
        files.append(SpaceFile(path, len(text.encode()), text=text))
    return sorted(files, key=lambda f: f.path)


def format_plan(files: list[SpaceFile]) -> str:
    """One relative path per line, then the count and total size (MB = 10^6 bytes)."""
    total = sum(f.size for f in files)
    return "\n".join([f.path for f in files] + [f"{len(files)} files, {total / 1e6:.1f} MB in total"])


def stage(files: list[SpaceFile], folder) -> Path:
    """Write the Space's files into ``folder`` (created; it must be empty): what the upload sends."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.iterdir()):
        raise SpaceError(f"{folder} is not empty: give a new or empty folder for the Space's files")
    for f in files:
        dest = folder / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.text is not None:
            dest.write_text(f.text, encoding="utf-8")
        else:
            shutil.copy2(f.source, dest)
    return folder


# --------------------------------------------------------------------------- the files written for the Space


def requirements(root: Path = ROOT) -> list:
    """requirements.txt's requirements (``packaging`` Requirement objects; comments dropped)."""
    from packaging.requirements import Requirement

    lines = (line.split("#", 1)[0].strip() for line in (root / "requirements.txt").read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def pinned(reqs, name: str) -> str:
    """The version ``name==V`` pins in ``reqs``."""
    for r in reqs:
        if r.name == name:
            spec = [s for s in r.specifier if s.operator == "=="]
            if spec:
                return spec[0].version
    raise SpaceError(f"requirements.txt pins no {name}==VERSION")


def gradio_version(root: Path = ROOT) -> str:
    """The installed Gradio, which the Space's sdk_version pins; it must be inside requirements.txt's range."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("gradio")
    except PackageNotFoundError:
        raise SpaceError("the Space pins the Gradio the app runs with here, and gradio is not installed: "
                         "pip install -r requirements.txt") from None
    spec = next((r.specifier for r in requirements(root) if r.name == "gradio"), None)
    if spec is not None and installed not in spec:
        raise SpaceError(f"gradio {installed} is installed but requirements.txt asks for gradio{spec}: the Space "
                         "would run a Gradio the app was not tested with")
    return installed


def render_requirements(hardware: str, root: Path = ROOT) -> str:
    """The Space's requirements.txt: requirements.txt with Gradio pinned to sdk_version; on CPU hardware
    torch's CPU build (no CUDA libraries to download), on ZeroGPU also ``spaces``."""
    on_cpu = hardware in CPU_HARDWARE
    reqs = requirements(root)
    lines = [f"# Written by `python -m draggan deploy-space --hardware {hardware}` from requirements.txt."]
    if on_cpu:
        lines.append(f"--extra-index-url {CPU_INDEX}")
    for r in reqs:
        if on_cpu and r.name in TORCH_PACKAGES:
            lines.append(f"{r.name}=={pinned(reqs, r.name)}+cpu")
        elif r.name == "gradio":
            lines.append(f"gradio=={gradio_version(root)}")
        else:
            lines.append(str(r))
    if hardware == ZERO_GPU:
        lines.append("spaces")
    return "\n".join(lines) + "\n"


def render_readme(hardware: str, models: list[str], root: Path = ROOT) -> str:
    note = HARDWARE_NOTES["cpu" if hardware in CPU_HARDWARE else hardware if hardware in HARDWARE_NOTES else "gpu"]
    cards = ", ".join(f"[`{m}`](checkpoints/{m}/MODEL_CARD.md)" if (root / "checkpoints" / m / "MODEL_CARD.md").is_file()
                      else f"`{m}`" for m in models)
    return README_TEMPLATE.format(gradio=gradio_version(root), python=f"{sys.version_info[0]}.{sys.version_info[1]}",
                                  hardware=hardware, hardware_note=note, models=cards or "none bundled")


def front_matter(readme: str) -> dict[str, str]:
    """The ``key: value`` lines between the README's two ``---`` lines (quotes stripped)."""
    lines = readme.splitlines()
    if not lines or lines[0] != "---" or "---" not in lines[1:]:
        return {}
    body = lines[1:lines.index("---", 1)]
    return {k.strip(): v.strip().strip('"') for k, _, v in (line.partition(":") for line in body if ":" in line)}


# --------------------------------------------------------------------------- upload


def hub_token() -> str | None:
    """The user's token: HF_TOKEN, else huggingface_hub's stored login."""
    from huggingface_hub import get_token

    return get_token()


def check_repo_id(repo_id: str) -> str:
    owner, sep, name = repo_id.partition("/")
    if not sep or not owner or not name or "/" in name:
        raise SpaceError(f"{repo_id!r} is not a Space name: write OWNER/NAME, e.g. me/draggan-studio")
    return repo_id


def deploy(repo_id: str, hardware: str = "cpu-basic", private: bool = False, api=None, root: Path = ROOT,
           log=print) -> str:
    """Create (or reuse) the Space, set its hardware and upload exactly :func:`plan`'s files; returns its URL.

    ``api``: an ``HfApi``-like object (tests pass a recorder); by default ``HfApi`` with the user's token.
    Files already in the Space that are not in the plan are deleted by the same commit, so the Space
    holds exactly the plan (the Hub keeps its ``.gitattributes``)."""
    check_repo_id(repo_id)
    hardware = hardware_flavor(hardware)
    files = plan(hardware, root)
    if api is None:
        token = hub_token()
        if not token:
            raise SpaceError(NO_TOKEN)
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    from huggingface_hub.errors import HfHubHTTPError, HTTPError  # HTTPError: the Hub client's transport errors

    with tempfile.TemporaryDirectory(prefix="draggan-space-") as tmp:
        stage(files, tmp)
        step = f"creating the Space {repo_id}"
        try:
            api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private or None, exist_ok=True)
            step = f"setting its hardware to {hardware}"
            api.request_space_hardware(repo_id, hardware)   # a Space that already existed moves too
            step = f"uploading {len(files)} files"
            log(f"uploading {format_plan(files).splitlines()[-1]} to {repo_id} ...")
            api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=tmp,
                              allow_patterns=[f.path for f in files], delete_patterns=["*"],
                              commit_message=f"DragGAN Studio ({hardware}), from python -m draggan deploy-space")
        except HfHubHTTPError as e:
            raise SpaceError(f"the Hub refused {step}: {e}") from None
        except (HTTPError, OSError) as e:
            raise SpaceError(f"could not reach the Hub while {step} ({type(e).__name__}: {e})") from None
    return f"https://huggingface.co/spaces/{repo_id}"

