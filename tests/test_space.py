"""``python -m draggan deploy-space``: which files a Space gets, what is written for it, and the upload's calls
(the Hub client replaced by a recorder). Nothing here reaches the network: a test that would is refused by
``no_network``."""

import shutil
import socket
import subprocess
from pathlib import Path

import gradio
import pytest
from httpx2 import Request, Response
from huggingface_hub import errors as hub_errors
from huggingface_hub.errors import HfHubHTTPError
from packaging.requirements import Requirement

from draggan import cli, space

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_test_token_that_must_never_be_printed"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every connection attempt fails the test (the loopback app of other files is not needed here)."""
    def refuse(self, address):
        raise AssertionError(f"a test tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture
def no_token(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(space, "hub_token", lambda: None)


def run_cli(capsys, *argv):
    code = cli.main(["deploy-space", *argv])
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- which files


def test_the_checkouts_space_holds_the_app_its_packages_and_the_models_inference_files_only():
    paths = [f.path for f in space.plan()]
    assert paths == sorted(paths) and len(paths) == len(set(paths))
    assert {"app.py", "LICENSE", "README.md", "requirements.txt"} <= set(paths)
    for model in ("celeba128", "celeba128-lite"):
        assert {f"checkpoints/{model}/model.safetensors", f"checkpoints/{model}/config.json"} <= set(paths)
    tracked = space.checkout_files(ROOT)
    assert {p for p in tracked if p.startswith(("draggan/", "inversion/")) and p.endswith(".py")} <= set(paths)
    for p in paths:
        assert not p.startswith(("tests/", "bench/", "lab/", "training/", "docs/")), p
        assert "/resume/" not in p and "__pycache__" not in p, p
    assert sum(f.size for f in space.plan()) <= 60e6     # the bound; today about 36 MB


def make_checkout(root: Path) -> set[str]:
    """A checkout without git (the filesystem is read) with one file of each kind; returns what a Space needs."""
    needed = {"app.py", "LICENSE", "draggan/__init__.py", "draggan/engine/x.py", "inversion/pti.py",
              "checkpoints/m/config.json", "checkpoints/m/model.safetensors", "checkpoints/m/MODEL_CARD.md",
              "checkpoints/m/encoder/encoder.safetensors", "checkpoints/m/encoder/config.json"}
    left_out = {"draggan/__pycache__/x.cpython-311.pyc", "draggan/notes.txt", "inversion/README.md",
                "checkpoints/m/resume/G-00000.safetensors", "checkpoints/m/resume/meta.json", "checkpoints/m/run.log",
                "tests/test_x.py", "bench/results/x.json", "bench/cold_start.py", "lab/collect.sh",
                "training/train.py", "docs/app.png", "CONTRIBUTING.md", "requirements-dev.txt", "pyproject.toml"}
    for p in needed | left_out:
        (root / p).parent.mkdir(parents=True, exist_ok=True)
        (root / p).write_text(p)
    shutil.copy(ROOT / "requirements.txt", root / "requirements.txt")
    shutil.copy(ROOT / "README.md", root / "README.md")
    return needed


def test_the_list_comes_from_the_package_contents_so_a_models_new_weight_file_comes_along(tmp_path):
    needed = make_checkout(tmp_path)
    files = space.plan(root=tmp_path)
    assert {f.path for f in files} == needed | {"README.md", "requirements.txt"}
    by_path = {f.path: f for f in files}
    assert by_path["checkpoints/m/encoder/encoder.safetensors"].size == len("checkpoints/m/encoder/encoder.safetensors")
    # The Space's README is written for it, not the checkout's.
    assert by_path["README.md"].text.startswith("---\n") and by_path["README.md"].source is None


def test_outside_a_checkout_it_says_so(tmp_path):
    with pytest.raises(space.SpaceError, match="no app.py"):
        space.plan(root=tmp_path)


def test_in_a_git_checkout_untracked_files_stay_home(tmp_path):
    needed = make_checkout(tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "."], check=True)
    (tmp_path / "checkpoints/m/scratch.safetensors").write_text("a local experiment, never added")
    paths = {f.path for f in space.plan(root=tmp_path)}
    assert needed <= paths and "checkpoints/m/scratch.safetensors" not in paths


def test_dry_run_prints_each_path_then_the_count_and_size_without_a_token_or_the_network(capsys, monkeypatch):
    def no_token_needed():
        raise AssertionError("--dry-run read the token")

    monkeypatch.setattr(space, "hub_token", no_token_needed)
    code, out, err = run_cli(capsys, "me/draggan-studio", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    files = space.plan()
    assert lines[:-1] == [f.path for f in files]
    assert lines[-1] == f"{len(files)} files, {sum(f.size for f in files) / 1e6:.1f} MB in total"


def test_dry_run_out_writes_exactly_the_listed_files(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "me/draggan-studio", "--dry-run", "--out", str(tmp_path / "sp"))
    assert code == 0
    written = sorted(p.relative_to(tmp_path / "sp").as_posix() for p in (tmp_path / "sp").rglob("*") if p.is_file())
    assert written == out.splitlines()[:-1]
    assert (tmp_path / "sp" / "checkpoints/celeba128/model.safetensors").read_bytes() == \
        (ROOT / "checkpoints/celeba128/model.safetensors").read_bytes()
    # A folder with something in it is refused: the Space would not be what the list says.
    code, _, err = run_cli(capsys, "me/draggan-studio", "--dry-run", "--out", str(tmp_path / "sp"))
    assert code == 2 and "not empty" in err


@pytest.mark.parametrize("argv, says", [
    (["draggan-studio", "--dry-run"], "OWNER/NAME"),
    (["me/x", "--dry-run", "--hardware", "h100"], "zero-gpu"),
    (["me/x", "--out", "somewhere"], "--dry-run"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv, says):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and says in err and "Traceback" not in err


# --------------------------------------------------------------------------- what is written for the Space


def test_readme_front_matter_names_the_app_the_installed_gradio_and_the_hardware():
    readme = next(f.text for f in space.plan("t4-small") if f.path == "README.md")
    meta = space.front_matter(readme)
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and (ROOT / meta["app_file"]).is_file()
    assert meta["sdk_version"] == gradio.__version__
    assert meta["suggested_hardware"] == "t4-small"
    assert len(meta["short_description"]) <= 60          # the Hub's limit
    assert "checkpoints/celeba128/MODEL_CARD.md" in readme  # linked, and uploaded (previous tests)


def test_the_pinned_gradio_range_admits_the_installed_gradio():
    """sdk_version is the installed Gradio: requirements.txt's range must agree, or the Space runs another one."""
    gradio_req = next(r for r in space.requirements() if r.name == "gradio")
    assert gradio_req.specifier.contains(gradio.__version__)


def test_the_checkouts_readme_has_no_front_matter_left_to_go_stale():
    """The Space's README is written by deploy-space; the checkout's own is a plain page."""
    assert space.front_matter((ROOT / "README.md").read_text()) == {}


def pins(text: str) -> dict[str, str]:
    reqs = [Requirement(line) for line in text.splitlines() if line and not line.startswith(("#", "-"))]
    return {r.name: str(r.specifier) for r in reqs}


def test_cpu_hardware_gets_torchs_cpu_build_and_gpus_get_the_pinned_cuda_build():
    base = pins((ROOT / "requirements.txt").read_text())
    cpu = space.render_requirements("cpu-basic")
    assert f"--extra-index-url {space.CPU_INDEX}" in cpu.splitlines()
    assert pins(cpu)["torch"] == base["torch"] + "+cpu" and pins(cpu)["torchvision"] == base["torchvision"] + "+cpu"
    for hardware in ("t4-small", space.ZERO_GPU):
        gpu = space.render_requirements(hardware)
        assert space.CPU_INDEX not in gpu and pins(gpu)["torch"] == base["torch"]
        assert ("spaces" in pins(gpu)) == (hardware == space.ZERO_GPU)
    # Gradio is pinned to the README's sdk_version; every other requirement is requirements.txt's.
    assert pins(cpu)["gradio"] == f"=={gradio.__version__}"
    assert {k: v for k, v in pins(cpu).items() if k not in ("torch", "torchvision", "gradio")} == \
        {k: v for k, v in base.items() if k not in ("torch", "torchvision", "gradio")}


def test_the_readmes_cpu_install_uses_the_same_pins_as_the_cpu_space():
    cpu_file = (ROOT / "requirements-cpu.txt").read_text()
    space_cpu = space.render_requirements("cpu-basic")
    assert {k: pins(cpu_file)[k] for k in space.TORCH_PACKAGES} == {k: pins(space_cpu)[k] for k in space.TORCH_PACKAGES}
    assert f"--extra-index-url {space.CPU_INDEX}" in cpu_file.splitlines() and "-r requirements.txt" in cpu_file


# --------------------------------------------------------------------------- the upload


class Recorder:
    """Stands in for huggingface_hub.HfApi: records each call (and the files the upload folder holds)."""

    instances = []

    def __init__(self, token=None, fail=None):
        self.token, self.fail, self.calls = token, fail, []
        Recorder.instances.append(self)

    def _record(self, name, *args, **kwargs):
        self.calls.append((name, args, kwargs))
        if self.fail == ("offline", name):
            raise hub_errors.HTTPError("[Errno -2] Name or service not known")
        if self.fail == name:
            raise HfHubHTTPError("402 Payment Required: this hardware needs a payment method",
                                 response=Response(402, request=Request("POST", "https://huggingface.co/api/x")))

    def create_repo(self, *args, **kwargs):
        self._record("create_repo", *args, **kwargs)

    def request_space_hardware(self, *args, **kwargs):
        self._record("request_space_hardware", *args, **kwargs)

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        kwargs["files_in_folder"] = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        self._record("upload_folder", **kwargs)


def test_the_upload_gets_the_allow_list_and_the_space_repo_type(monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setattr(huggingface_hub, "HfApi", Recorder)
    Recorder.instances.clear()
    code, out, err = run_cli(capsys, "me/draggan-studio", "--hardware", "zero-gpu", "--private")
    assert code == 0, err
    (api,) = Recorder.instances
    assert api.token == TOKEN and TOKEN not in out + err
    names = [c[0] for c in api.calls]
    assert names == ["create_repo", "request_space_hardware", "upload_folder"]
    _, args, kwargs = api.calls[0]
    assert args == ("me/draggan-studio",) and kwargs["repo_type"] == "space" and kwargs["space_sdk"] == "gradio"
    assert kwargs["exist_ok"] is True and kwargs["private"] is True
    assert api.calls[1][1] == ("me/draggan-studio", space.ZERO_GPU)
    upload = api.calls[2][2]
    expected = [f.path for f in space.plan(space.ZERO_GPU)]
    assert upload["repo_type"] == "space" and upload["repo_id"] == "me/draggan-studio"
    assert upload["allow_patterns"] == expected and upload["files_in_folder"] == expected
    assert "https://huggingface.co/spaces/me/draggan-studio" in out


def test_without_a_token_it_says_how_to_log_in(capsys, no_token):
    code, out, err = run_cli(capsys, "me/draggan-studio")
    assert code == 2 and "hf auth login" in err and "HF_TOKEN" in err


def test_a_refusal_from_the_hub_is_a_sentence_that_names_the_step(capsys):
    api = Recorder(fail="request_space_hardware")
    with pytest.raises(space.SpaceError, match="refused setting its hardware to t4-small.*402"):
        space.deploy("me/draggan-studio", "t4-small", api=api, log=lambda *_: None)
    assert [c[0] for c in api.calls] == ["create_repo", "request_space_hardware"]   # nothing uploaded


def test_an_unreachable_hub_is_a_sentence_too():
    api = Recorder(fail=("offline", "create_repo"))
    with pytest.raises(space.SpaceError, match="could not reach the Hub while creating the Space me/x"):
        space.deploy("me/x", api=api, log=lambda *_: None)
