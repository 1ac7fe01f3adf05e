"""invert(): errors fall stage by stage, G stays untouched, cache, cancel, losses, save/load and CLI."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from helpers import tiny_generator
from PIL import Image

from draggan.models.networks import Generator
from inversion import Cancelled, InversionCache, InversionConfig, InversionResult, PhotoError, invert, losses
from inversion.__main__ import main as cli_main
from inversion.metrics import psnr, to_image

REPO = Path(__file__).resolve().parents[1]

FAST = dict(steps_w=12, steps_pti=10, w_avg_samples=500, identity=False, alignment="center", loss="pyramid")
pytestmark = pytest.mark.usefixtures("one_thread")  # G and one_thread: conftest.py


@pytest.fixture(scope="module")
def face():
    return Image.fromarray(skimage.data.astronaut()).crop((96, 0, 352, 256))  # 256 px around the face


@pytest.mark.slow
def test_errors_fall_stage_by_stage_and_G_untouched(G, face):
    before = {k: v.clone() for k, v in G.state_dict().items()}
    seen = []
    result = invert(face, G, InversionConfig(**FAST), progress=lambda s, i, n: seen.append((s, i, n)), cache=None)
    mse = result.report["stage_mse"]
    assert mse["projection"] < mse["initial"]
    assert mse["tuned"] < mse["projection"]
    # The W optimization itself goes downhill (first vs last few steps of the loss history is implicit in mse);
    # the report's image metrics agree with the tensors.
    target = np.asarray(result.aligned, np.float32) / 127.5 - 1
    recon = np.asarray(result.reconstruction, np.float32) / 127.5 - 1
    assert abs(np.square(target - recon).mean() - mse["tuned"]) < 0.01
    assert result.report["psnr"] == pytest.approx(psnr(result.aligned, result.reconstruction), abs=1e-3)
    # Contract shapes/types.
    assert result.ws.shape == (1, G.num_ws, G.w_dim) and result.ws.dtype == torch.float32
    assert result.ws.device.type == "cpu"
    assert result.generator is not G and not any(p.requires_grad for p in result.generator.parameters())
    with torch.no_grad():
        again = to_image(result.generator.synthesis(result.ws, noise_mode="const"))
    assert np.array_equal(np.asarray(again), np.asarray(result.reconstruction))
    for k, v in G.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in G.parameters())
    stages = [s for s, _, _ in seen]
    assert stages.index("read") < stages.index("align") < stages.index("project_w") < stages.index("tune")
    assert ("project_w", FAST["steps_w"], FAST["steps_w"]) in seen
    assert result.report["steps"]["w"] == FAST["steps_w"] and 0 < result.report["steps"]["pti"] <= FAST["steps_pti"]
    assert set(result.report["timings"]) >= {"read", "align", "project", "tune", "report", "total"}


@pytest.mark.slow
def test_wplus_phase_changes_layers_independently(G, face):
    result = invert(face, G, InversionConfig(**{**FAST, "steps_wplus": 4, "steps_pti": 0}), cache=None)
    ws = result.ws[0]
    assert not torch.allclose(ws[0], ws[-1])  # W+ : layers differ
    w_only = invert(face, G, InversionConfig(**{**FAST, "steps_pti": 0}), cache=None).ws[0]
    assert torch.allclose(w_only[0], w_only[-1])  # W : one latent broadcast


def test_face_photo_with_template_reports_identity(G, face):
    template = json.loads((REPO / "checkpoints" / "celeba128" / "alignment.json").read_text())
    cfg = InversionConfig(**{**FAST, "alignment": "auto", "template": template, "identity": True,
                             "steps_w": 4, "steps_pti": 2})
    result = invert(face, G, cfg, cache=None)
    r = result.report
    assert r["face_found"] and r["num_faces"] == 1 and r["alignment"] in ("template", "ffhq")
    # A random tiny generator renders no face: the distance falls back to the input's box, or is None.
    assert r["identity_distance"] is None or r["identity_distance"] > 0
    assert json.loads(json.dumps(r)) == r  # JSON-ready


def test_faceless_photo_notice(G):
    cat = skimage.data.chelsea()
    r = invert(cat, G, InversionConfig(**{**FAST, "alignment": "auto", "steps_w": 2, "steps_pti": 1}),
               cache=None).report
    assert not r["face_found"] and r["alignment"] == "center"
    assert any("No face found" in n for n in r["notices"])
    assert any("no alignment template" in n for n in r["notices"])


@pytest.mark.slow
def test_cache_hits_same_photo_only(G, face):
    cache = InversionCache(max_items=2)
    cfg = InversionConfig(**{**FAST, "steps_w": 3, "steps_pti": 2})
    first = invert(face, G, cfg, cache=cache)
    assert not first.report["cached"] and cache.misses == 1
    second = invert(np.asarray(face), G, cfg, cache=cache)  # same pixels, another container
    assert second.report["cached"] and cache.hits == 1
    assert second.generator is first.generator and torch.equal(second.ws, first.ws)
    other = invert(face.transpose(Image.FLIP_LEFT_RIGHT), G, cfg, cache=cache)
    assert not other.report["cached"] and cache.misses == 2
    invert(face, G, InversionConfig(**{**FAST, "steps_w": 4, "steps_pti": 2}), cache=cache)  # other settings
    assert cache.misses == 3 and len(cache) == 2  # bounded LRU
    invert(face, tiny_generator(seed=1), cfg, cache=cache)  # another model
    assert cache.misses == 4


def test_disk_cache(G, face, tmp_path):
    cfg = InversionConfig(**{**FAST, "steps_w": 2, "steps_pti": 1})
    first = invert(face, G, cfg, cache=InversionCache(directory=tmp_path))
    fresh = InversionCache(directory=tmp_path)  # e.g. after a restart
    hit = invert(face, G, cfg, cache=fresh)
    assert hit.report["cached"] and fresh.hits == 1
    assert torch.equal(hit.ws, first.ws)


@pytest.mark.parametrize("kind", ["event", "callable"])
def test_cancel_raises(G, face, kind):
    calls = []
    event = threading.Event()

    def progress(stage, step, total):
        calls.append(stage)
        if stage == "project_w" and step == 2:
            event.set()

    cancel = event if kind == "event" else event.is_set
    with pytest.raises(Cancelled):
        invert(face, G, InversionConfig(**FAST), progress=progress, cancel=cancel, cache=None)
    assert calls.count("project_w") == 2 and "tune" not in calls


def test_bad_photo_is_a_photo_error(G):
    with pytest.raises(PhotoError, match="not a photo|not an image"):
        invert(b"GIF89a but not really" * 20, G, InversionConfig(**FAST), cache=None)


def test_lpips_fallback_reported_and_no_download(G, face, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.delenv(losses.VGG16_ENV, raising=False)

    def no_download(*a, **k):
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    loss = losses.make_loss("auto")
    assert loss.name == "pyramid" and "LPIPS weights missing" in loss.notice
    r = invert(face, G, InversionConfig(**{**FAST, "loss": "auto", "steps_w": 2, "steps_pti": 1}), cache=None).report
    assert r["loss_used"] == "pyramid" and r["lpips"] is None
    # The documented fallback is said once, in the report's details; notices (which the app shows as warnings)
    # are for what the user should act on.
    assert "LPIPS weights missing" in r["loss_note"]
    assert not any("LPIPS" in n for n in r["notices"])


@pytest.mark.slow
def test_lpips_loads_vgg_weights_from_a_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    # A stand-in for torchvision's vgg16 file: the `features.*` tensors with recognisable values.
    # VGG16's 13 convolutions (index in torchvision's `features`, in -> out channels).
    convs = {0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
             17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
    fake = {}
    for index, (cin, cout) in convs.items():
        fake[f"features.{index}.weight"] = torch.full((cout, cin, 3, 3), 0.001 * index)
        fake[f"features.{index}.bias"] = torch.full((cout,), 0.01)
    path = tmp_path / losses.VGG16_FILE
    torch.save(fake, path)
    monkeypatch.setenv(losses.VGG16_ENV, str(path))
    loss = losses.make_loss("auto")
    assert loss.name == "lpips-vgg" and loss.notice is None
    assert torch.equal(loss.module.net.slice3.state_dict()["10.weight"], fake["features.10.weight"])
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    assert float(loss(x, x)[0]) == pytest.approx(0, abs=1e-6)
    assert losses.lpips_metric() is not None


def test_pyramid_loss_properties():
    loss = losses.make_loss("pyramid")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.allclose(loss(x, x), torch.zeros(2), atol=1e-6)
    near, far = x + 0.05 * torch.randn_like(x), x + 0.3 * torch.randn_like(x)
    assert (loss(x, near) < loss(x, far)).all()


def test_save_load_and_cli(G, face, tmp_path, capsys):
    result = invert(face, G, InversionConfig(**{**FAST, "steps_w": 2, "steps_pti": 2}), cache=None)
    loaded = InversionResult.load(result.save(tmp_path / "r"))
    assert torch.equal(loaded.ws, result.ws)
    with torch.no_grad():
        img = to_image(Generator.from_pretrained(tmp_path / "r" / "generator").synthesis(loaded.ws, noise_mode="const"))
    assert psnr(img, result.reconstruction) > 45  # fp32 weights + baked noise: the same picture
    assert loaded.paste_back(loaded.aligned).size == face.size

    model = tmp_path / "model"
    G.save_pretrained(model, dtype=torch.float32)
    face.save(tmp_path / "face.jpg")
    rc = cli_main([str(tmp_path / "face.jpg"), "--model", str(model), "--out", str(tmp_path / "cli"),
                   "--steps-w", "2", "--steps-pti", "1", "--device", "cpu", "--alignment", "center", "--loss", "l2"])
    assert rc == 0
    report = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert report["loss_used"] == "l2" and report["steps"]["w"] == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["start"] == "projection"   # it says which
    for name in ("aligned.png", "reconstruction.png", "latent.pt", "generator/config.json"):
        assert (tmp_path / "cli" / name).is_file()
    assert cli_main([str(tmp_path / "missing.jpg"), "--model", str(model), "--out", str(tmp_path / "x")]) == 2


@pytest.mark.slow
def test_locality_regularization_limits_drift_near_the_pivot(G, face):
    """PTI's locality term keeps latents around the pivot rendering as the original generator did."""
    from inversion.pti import noise_layers, set_const_noise

    def drift(locality: bool) -> float:
        cfg = InversionConfig(**{**FAST, "steps_w": 3, "steps_pti": 10, "lr_pti": 3e-3, "locality": locality,
                                 "locality_alpha": 5.0})
        r = invert(face, G, cfg, cache=None)
        reference = __import__("copy").deepcopy(G)  # same const noise as the tuned copy, original weights
        set_const_noise(reference, [layer.noise_const[None, None] for layer in noise_layers(r.generator)])
        total = 0.0
        with torch.no_grad():
            for seed in range(6):
                d = G.ws_from_seed(100 + seed) - r.ws
                near = r.ws + 5.0 * d / d.norm()
                total += float((r.generator.synthesis(near) - reference.synthesis(near)).square().mean())
        return total

    assert drift(True) < 0.95 * drift(False)


def test_alignment_for_model(tmp_path):
    from inversion import alignment_for_model

    (tmp_path / "alignment.json").write_text('{"method": "ffhq"}')
    assert alignment_for_model(tmp_path) == ("auto", str(tmp_path))
    assert alignment_for_model("stylegan2-ffhq-512x512") == ("ffhq", None)
    assert alignment_for_model("stylegan2-afhqcat-512x512") == ("center", None)
    assert alignment_for_model(tmp_path / "no-such-model") == ("auto", None)


def test_bundled_model_finds_its_template_without_being_told():
    from draggan.loaders.registry import REPO_ROOT
    from inversion.pipeline import resolve_alignment

    folder = REPO_ROOT / "checkpoints" / "celeba128"
    if not (folder / "alignment.json").is_file():
        pytest.skip("bundled celeba128 model not present")
    G = Generator.from_pretrained(folder)  # loaded without remembering where from
    method, template, notices = resolve_alignment(InversionConfig(), G)
    assert method == "template" and template.resolution == 128 and notices == []
    # A generator that is not a stored model gets FFHQ alignment and a notice saying so.
    method, _, notices = resolve_alignment(InversionConfig(), tiny_generator())
    assert method == "ffhq" and "no alignment template" in notices[0]


def test_quality_picks_the_step_budget_and_explicit_steps_win():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    fast, faithful = InversionConfig().resolved(cpu), InversionConfig(quality="faithful").resolved(cpu)
    assert faithful.steps_pti > fast.steps_pti and faithful.steps_w >= fast.steps_w
    assert InversionConfig(quality="faithful").resolved(gpu).steps_pti > InversionConfig().resolved(gpu).steps_pti
    assert InversionConfig(quality="faithful", steps_pti=7).resolved(cpu).steps_pti == 7
    with pytest.raises(ValueError, match="quality"):
        InversionConfig(quality="best").resolved(cpu)


def test_faithful_does_not_stop_where_fast_stops():
    """On a GPU both presets used to stop at the same 0.06 threshold, long before either budget ended."""
    for device in (torch.device("cpu"), torch.device("cuda")):
        fast, faithful = InversionConfig().resolved(device), InversionConfig(quality="faithful").resolved(device)
        assert fast.pti_stop_lpips == fast.pti_stop_fallback == 0.06
        assert faithful.pti_stop_lpips is None and faithful.pti_stop_fallback is None   # every step runs
    # Explicit thresholds win over the preset's.
    cfg = InversionConfig(quality="faithful", pti_stop_fallback=0.03, pti_stop_lpips=None).resolved(torch.device("cpu"))
    assert cfg.pti_stop_fallback == 0.03 and cfg.pti_stop_lpips is None


def test_poor_reconstruction_is_reported_with_what_it_means(G, face):
    """A tiny generator cannot reproduce a face: the report says the reconstruction is poor, and why it matters."""
    from inversion.pipeline import POOR_PSNR

    result = invert(face, G, InversionConfig(steps_w=2, steps_pti=1, w_avg_samples=64, identity=False, loss="l2"),
                    cache=None)
    assert result.report["psnr"] < POOR_PSNR and result.report["poor_reconstruction"] is True
    notice = [n for n in result.report["notices"] if n.startswith("Poor reconstruction")]
    assert notice and "generator's version of the face" in notice[0]
