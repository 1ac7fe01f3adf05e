"""The learned encoder: safe loading, sharing between models, invert()'s use of it and its fallback, training."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_generator

from draggan.loaders import load_generator
from inversion import InversionConfig, InversionError, invert
from inversion.encoder import Encoder, EncoderConfig, encode, encoder_folder, load_encoder
from inversion.metrics import to_image
from inversion.pipeline import planned_steps
from training import train_encoder

REPO = Path(__file__).resolve().parents[1]
FAST = dict(steps_w=3, steps_pti=2, w_avg_samples=200, identity=False, alignment="center", loss="pyramid")
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_encoder(G, seed=0) -> Encoder:
    torch.manual_seed(seed)
    E = Encoder(EncoderConfig(img_resolution=G.img_resolution, num_ws=G.num_ws, w_dim=G.w_dim,
                              channels=(8, 8, 16, 16, 16), head_hidden=16, iterations=2))
    for p in E.parameters():    # heads start at zero; give them weights so that the encoder does something
        torch.nn.init.normal_(p, std=0.02)
    E.w_avg.copy_(G.mapping.w_avg)
    return E.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model_with_encoder(tmp_path_factory, G):
    folder = tmp_path_factory.mktemp("model")
    G.save_pretrained(folder, dtype=torch.float32)
    tiny_encoder(G).save_pretrained(folder / "encoder", dtype=torch.float32)
    return folder


def test_encoder_round_trips_through_safetensors(G, tmp_path):
    E = tiny_encoder(G)
    E.save_pretrained(tmp_path / "e")                                    # fp16 weights, fp32 W statistics
    back = Encoder.from_pretrained(tmp_path / "e")
    x = torch.rand(2, 3, G.img_resolution, G.img_resolution) * 2 - 1
    assert torch.allclose(E(x, x), back(x, x), atol=2e-3)
    assert torch.equal(back.w_avg, E.w_avg)
    a, b = encode(E, G, x), encode(back, G, x)
    assert a.shape == (2, G.num_ws, G.w_dim) and torch.allclose(a, b, atol=5e-3)


def test_damaged_or_foreign_encoder_files_are_refused_in_a_sentence(G, tmp_path):
    folder = tiny_encoder(G).save_pretrained(tmp_path / "e")
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(InversionError, match="cannot be read"):
        Encoder.from_pretrained(folder)

    class Boom:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    (folder / "model.safetensors").write_bytes(pickle.dumps({"stem.weight": Boom()}))
    with pytest.raises(InversionError, match="cannot be read"):
        Encoder.from_pretrained(folder)
    assert not (tmp_path / "pwned").exists()                                 # nothing in the file ran
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "architecture": "psp"}))
    with pytest.raises(InversionError, match="not an encoder this version can use"):
        Encoder.from_pretrained(folder)


def test_a_model_may_share_another_models_encoder(G, model_with_encoder, tmp_path):
    other = tmp_path / "lite"
    other.mkdir()
    assert encoder_folder(other) is None and load_encoder(other) is None
    (other / "encoder.json").write_text(json.dumps({"shared": str(Path("..") / model_with_encoder.name / "encoder")}))
    (tmp_path / model_with_encoder.name).symlink_to(model_with_encoder)
    assert encoder_folder(other) == (model_with_encoder / "encoder").resolve()
    assert isinstance(load_encoder(other), Encoder)
    (other / "encoder.json").write_text(json.dumps({"shared": "../nowhere"}))
    with pytest.raises(InversionError, match="holds no encoder"):
        encoder_folder(other)


@pytest.mark.slow
def test_invert_starts_from_the_models_encoder_and_says_so(model_with_encoder):
    G = load_generator(model_with_encoder)
    face = to_image(tiny_generator(seed=5).synthesis(G.ws_from_seed(4, 0.7)))
    seen = []
    r = invert(face, G, InversionConfig(**FAST, model_dir=str(model_with_encoder)), cache=None,
               progress=lambda s, i, n: seen.append(s))
    assert r.report["start"] == "encoder" and r.report["encoder"] == str(model_with_encoder / "encoder")
    assert r.report["steps"]["w"] == 0 and r.report["steps"]["encoder_iterations"] == 2
    assert "encode" in seen and "project_w" not in seen and "encode" in r.report["timings"]
    assert r.report["stage_mse"]["tuned"] < r.report["stage_mse"]["projection"]
    # The same photo without the encoder: projection, as for models that ship none (NVIDIA's).
    r2 = invert(face, G, InversionConfig(**FAST, model_dir=str(model_with_encoder), encoder="none"), cache=None)
    assert r2.report["start"] == "projection" and r2.report["encoder"] is None and r2.report["steps"]["w"] == 3


@pytest.mark.slow
def test_instant_is_the_encoders_pass_alone_and_says_what_that_means(model_with_encoder, tiny_model_dir):
    G = load_generator(model_with_encoder)
    face = to_image(G.synthesis(G.ws_from_seed(1, 0.7)))
    preset_budget = {**FAST, "steps_pti": None}          # the presets' tuning steps, not the test's 2
    config = InversionConfig(**preset_budget, quality="instant", model_dir=str(model_with_encoder))
    assert planned_steps(config, G) == {"encode": 1, "project_w": 0, "project_wplus": 0, "tune": 0}
    r = invert(face, G, config, cache=None)
    assert r.report["start"] == "encoder" and r.report["steps"]["pti"] == 0
    assert all(torch.equal(a, b) for a, b in zip(r.generator.parameters(), G.parameters()))   # nothing tuned
    # Its rough reconstruction is expected: a note in the report, not a warning.
    assert r.report["poor_reconstruction"] and any("Instant inversion" in n for n in r.report["notes"])
    assert not any("Instant inversion" in n or "Poor reconstruction" in n for n in r.report["notices"])
    # A model without an encoder: 'instant' inverts as 'fast' does, and says so.
    G0 = load_generator(tiny_model_dir)
    r0 = invert(face, G0, InversionConfig(**preset_budget, quality="instant", model_dir=str(tiny_model_dir)),
                cache=None)
    assert r0.report["start"] == "projection" and r0.report["steps"]["pti"] > 0
    assert any("no learned encoder" in n for n in r0.report["notes"])


@pytest.mark.slow
def test_a_model_without_an_encoder_falls_back_to_projection(tiny_model_dir):
    G = load_generator(tiny_model_dir)
    face = to_image(G.synthesis(G.ws_from_seed(1, 0.7)))
    r = invert(face, G, InversionConfig(**FAST, model_dir=str(tiny_model_dir)), cache=None)
    assert r.report["start"] == "projection" and r.report["steps"]["w"] == FAST["steps_w"]
    with pytest.raises(InversionError, match="expects a 32 px generator"):
        bad = tiny_encoder(tiny_generator(img_resolution=32))
        bad.save_pretrained(tiny_model_dir.parent / "bad")
        invert(face, G, InversionConfig(**FAST, encoder=str(tiny_model_dir.parent / "bad")), cache=None)


@pytest.mark.slow
def test_shipped_encoder_recovers_a_generated_faces_latent():
    """The bundled celeba128 encoder on faces of its own generator: its image is the same face, far closer than the
    mean latent's where it starts, and its latent is closer to the true one. (W has many directions that barely
    change the image: 10 minutes of training recover a little of the latent, RMS 0.6 against 0.7 of the W spread,
    and most of the image.)"""
    G = load_generator("celeba128")
    E = load_encoder(REPO / "checkpoints" / "celeba128")
    assert E is not None, "celeba128 ships no encoder"
    gen = torch.Generator().manual_seed(7)
    ws_true = train_encoder.sample_latents(G, 4, gen, "cpu", mixing=0.0, truncation=(0.7, 0.7))
    with torch.no_grad():
        x = G.synthesis(ws_true, noise_mode="const").clamp(-1, 1)
        ws = encode(E, G, x)
        y = G.synthesis(ws, noise_mode="const")
        y0 = G.synthesis(E.start(4), noise_mode="const")
    scale = float(E.w_scale)
    start = (E.start(4) - ws_true).square().mean().sqrt() / scale
    err = (ws - ws_true).square().mean().sqrt() / scale
    assert err < 0.9 * start, (float(err), float(start))
    psnr, psnr_start = float(train_encoder.psnr(y, x).mean()), float(train_encoder.psnr(y0, x).mean())
    assert psnr > 20.0 and psnr > psnr_start + 5, (psnr, psnr_start)


def test_the_lite_model_shares_the_celeba128_encoder():
    lite, full = REPO / "checkpoints" / "celeba128-lite", REPO / "checkpoints" / "celeba128"
    assert encoder_folder(lite) == encoder_folder(full).resolve()


def test_train_encoder_snapshots_resume_and_export(G, tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(4):
        to_image(G.synthesis(G.ws_from_seed(i, 0.7))).save(faces / f"{i}.png")
    model = tmp_path / "G"
    G.save_pretrained(model, dtype=torch.float32)
    args = ["--model", str(model), "--data", str(faces), "--out", str(tmp_path / "run"), "--batch", "2",
            "--iterations", "2", "--steps", "2", "--channels", "8,8,16,16,16", "--device", "cpu", "--eval", str(faces)]
    train_encoder.main(args)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["event"] == "snapshot" and log[-1]["step"] == 2 and "psnr_it2" in log[-1]
    E = load_encoder(tmp_path / "run")                 # the run folder holds encoder/, as a model folder would
    assert E is not None and E.cfg.iterations == 2
    compact = sorted(p.name for p in (tmp_path / "run" / "compact").iterdir())
    assert "meta.json" in compact and all(p.stat().st_size <= train_encoder.MAX_FILE_BYTES
                                          for p in (tmp_path / "run" / "compact").iterdir())
    before = {k: v.clone() for k, v in E.state_dict().items()}
    train_encoder.main(args[:-2] + ["--steps", "3", "--resume", str(tmp_path / "run" / "compact")])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("event") == "start"] == [0, 2]
    after = load_encoder(tmp_path / "run").state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not np.isnan(float(log[-1].get("step", 0)))
    # A shipped encoder folder continues too: its weights and step count, with Adam and the lr warm-up anew.
    run2 = tmp_path / "run2"
    train_encoder.main(args[:-2] + ["--steps", "4", "--log-steps", "1", "--resume", str(tmp_path / "run" / "encoder"),
                                    "--out", str(run2)])
    log2 = [json.loads(line) for line in (run2 / "log.jsonl").read_text().splitlines()]
    assert log2[0]["event"] == "start" and log2[0]["step"] == 3
    first = next(r for r in log2 if "lr" in r)
    assert first["step"] == 4 and 0 < first["lr"] <= 3e-4 / 400      # the first of 500 warm-up steps
