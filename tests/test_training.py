"""Training: a few real optimization steps on the CPU, resume, and 2-process DDP (gloo) equivalence."""

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from draggan.models.networks import Generator
from training.augment import augment
from training.discriminator import Discriminator, MinibatchStdLayer

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--resolution", "16", "--channel-base", "256", "--channel-max", "16", "--z-dim", "16", "--w-dim", "16",
        "--mapping-layers", "2", "--device", "cpu", "--amp", "none", "--r1-interval", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.RandomState(0)
    for s in range(2):
        with zipfile.ZipFile(d / f"train-{s:02d}.zip", "w", zipfile.ZIP_STORED) as z:
            for i in range(16):
                # Smooth blobs, not noise: WebP keeps them nearly intact.
                a = np.kron(rng.rand(4, 4, 3), np.ones((4, 4, 1))) * 255
                buf = io.BytesIO()
                Image.fromarray(a.astype(np.uint8)).save(buf, "WEBP", quality=90)
                z.writestr(f"{s}_{i}.webp", buf.getvalue())
    return d


def run_train(args, nproc=1, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.update(env_extra or {})
    if nproc == 1:
        cmd = [sys.executable, "-m", "training.train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "training.train", *args]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_writes_snapshot_and_resumes(shards, tmp_path):
    out = tmp_path / "run"
    run_train(["--data", str(shards), "--out", str(out), "--kimg", "0.064", "--batch", "8",
               "--tick-kimg", "0.032", "--snap-kimg", "0.032", *TINY])
    ticks = [r for r in read_log(out) if "loss_G" in r]
    assert ticks and all(np.isfinite(r["loss_G"]) and np.isfinite(r["loss_D"]) for r in ticks)
    assert (out / "grid-000000.png").exists()
    G = Generator.from_pretrained(out / "latest")
    assert G(torch.randn(2, 16)).shape == (2, 3, 16, 16)
    meta = json.loads((out / "state" / "meta.json").read_text())
    assert meta["cur_nimg"] == 64
    # Resume continues counting from the saved state.
    run_train(["--data", str(shards), "--out", str(out), "--kimg", "0.096", "--batch", "8", "--resume",
               str(out / "state"), "--tick-kimg", "0.032", "--snap-kimg", "0.032", *TINY])
    log = read_log(out)
    assert any(r.get("event") == "resume" and r["kimg"] == 0.064 for r in log)
    assert json.loads((out / "state" / "meta.json").read_text())["cur_nimg"] == 96


@pytest.mark.slow
def test_discriminator_warmup_after_resume_does_not_train_G(shards, tmp_path):
    out = tmp_path / "run"
    run_train(["--data", str(shards), "--out", str(out), "--kimg", "0.064", "--batch", "8", *TINY])
    before = json.loads((out / "state" / "meta.json").read_text())
    G_before = Generator.from_pretrained(out / "latest")
    # 4 D-only minibatches, then exactly one G step (0.072 kimg = 64 + 8 images).
    # The compact snapshot (fp16 G, G_ema and D, what a remote machine hands back) resumes too,
    # and its G is the trained generator, not its average.
    compact = out / "compact"
    assert json.loads((compact / "meta.json").read_text())["compact"] is True
    assert not (compact / "optim.pt").exists()
    from training.checkpoint import load_sharded
    g, g_ema = load_sharded(compact, "G"), load_sharded(compact, "G_ema")
    assert g is not None and g.keys() == g_ema.keys()
    assert any(not torch.equal(g[k], g_ema[k]) for k in g if g[k].is_floating_point())
    assert all(v.dtype == torch.float16 for v in g.values() if v.is_floating_point())
    run_train(["--data", str(shards), "--out", str(out), "--kimg", "0.072", "--batch", "8", "--resume",
               str(compact), "--d-warmup-kimg", "0.032", *TINY])
    after = json.loads((out / "state" / "meta.json").read_text())
    assert after["cur_nimg"] == 72 and after["step"] == before["step"] + 1
    assert any(r.get("event") == "d_warmup_done" and r["kimg"] == 0.064 for r in read_log(out))
    G_after = Generator.from_pretrained(out / "latest")
    changed = [not torch.equal(a, b) for a, b in zip(G_before.state_dict().values(), G_after.state_dict().values())]
    assert any(changed)  # the one G step moved G_ema


@pytest.mark.slow
def test_two_process_gloo_matches_one_process(shards, tmp_path):
    """Same seed, same global batch: 1 and 2 processes log the same losses step by step."""
    common = ["--data", str(shards), "--kimg", "0.032", "--batch", "8", "--tick-kimg", "0.008",
              "--snap-kimg", "1", "--aug", "fixed", "--aug-p", "0.5", *TINY]
    run_train([*common, "--out", str(tmp_path / "one")], nproc=1)
    run_train([*common, "--out", str(tmp_path / "two")], nproc=2)
    one = [r for r in read_log(tmp_path / "one") if "loss_G" in r]
    two = [r for r in read_log(tmp_path / "two") if "loss_G" in r]
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert a["step"] == b["step"]
        for key in ("loss_G", "loss_D"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), (key, a, b)


def test_minibatch_std_groups_are_split_invariant():
    x = torch.randn(8, 4, 2, 2)
    layer = MinibatchStdLayer(group_size=4)
    whole = layer(x)
    halves = torch.cat([layer(x[:4]), layer(x[4:])])
    torch.testing.assert_close(whole, halves)


def test_augment_slices_the_global_draw():
    x = torch.randn(8, 3, 16, 16)
    g1, g2, g3 = (torch.Generator().manual_seed(5) for _ in range(3))
    full = augment(x, 0.7, g1, 8, 0)
    first = augment(x[:4], 0.7, g2, 8, 0)
    second = augment(x[4:], 0.7, g3, 8, 4)
    torch.testing.assert_close(torch.cat([first, second]), full)
    assert not torch.allclose(full, x)  # p=0.7 really changes images


def test_discriminator_learns_to_separate():
    """A few D steps on two fixed distributions separate their logits: the D is trainable end to end."""
    torch.manual_seed(0)
    D = Discriminator(16, channel_base=256, channel_max=16)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99))
    real = torch.rand(8, 3, 16, 16) * 0.5 + 0.5
    fake = -torch.rand(8, 3, 16, 16) * 0.5
    for _ in range(30):
        loss = torch.nn.functional.softplus(-D(real)).mean() + torch.nn.functional.softplus(D(fake)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert D(real).mean() > D(fake).mean() + 1.0


def test_augment_supports_r1_double_backward():
    """R1 differentiates D's input gradient again: every augmentation op must allow that."""
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    D = Discriminator(16, channel_base=256, channel_max=16)
    y = D(augment(x, 1.0, torch.Generator().manual_seed(0)))
    (grad,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert D.b16.conv0.weight.grad is not None and torch.isfinite(D.b16.conv0.weight.grad).all()


def test_translation_shifts_content_by_whole_pixels():
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 8, 8] = 1
    gen = torch.Generator().manual_seed(1)
    y = augment(x.expand(1, 3, 16, 16).clone(), 1.0, gen)
    assert torch.count_nonzero(y.abs() > 1e-6) >= 1  # content survives (unless cut out) and stays on the grid


def test_resume_from_shipped_model_folder(tmp_path):
    """checkpoints/<model>/resume holds D + meta; G_ema comes from the shipped model.safetensors."""
    from training.checkpoint import load_training_state, save_sharded

    G = Generator(img_resolution=16, channel_base=256, channel_max=16, z_dim=16, w_dim=16, mapping_layers=2)
    D = Discriminator(16, channel_base=256, channel_max=16)
    G.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "resume").mkdir()
    save_sharded({k: v.half() for k, v in D.state_dict().items()}, tmp_path / "model" / "resume", "D", 2 ** 20)
    (tmp_path / "model" / "resume" / "meta.json").write_text(json.dumps({"cur_nimg": 640, "step": 80, "aug_p": 0.1}))
    G2, G_ema2 = (Generator(G.cfg) for _ in range(2))
    D2 = Discriminator(16, channel_base=256, channel_max=16)
    opt = torch.optim.Adam(G2.parameters())
    meta = load_training_state(tmp_path / "model" / "resume", G2, D2, G_ema2, opt, opt, "cpu")
    assert meta["cur_nimg"] == 640 and not meta["has_optim"]
    ref = G.synthesis.b16.conv1.weight.half().float()
    torch.testing.assert_close(G_ema2.synthesis.b16.conv1.weight, ref)
    torch.testing.assert_close(G2.synthesis.b16.conv1.weight, ref)  # G restarts from its average
    torch.testing.assert_close(D2.b4.out.weight, D.b4.out.weight.half().float())


def test_the_shipped_resume_state_loads_with_its_own_trained_generator():
    """checkpoints/celeba128/resume is what the next GPU run starts from: it must load strictly."""
    from draggan.loaders.checkpoints import load_generator
    from training.checkpoint import load_training_state

    shipped = load_generator("celeba128")
    meta_args = json.loads((ROOT / "checkpoints" / "celeba128" / "resume" / "meta.json").read_text())["args"]
    G, G_ema = (Generator(shipped.cfg) for _ in range(2))
    D = Discriminator(shipped.cfg.img_resolution, channel_base=meta_args["channel_base"],
                      channel_max=meta_args["channel_max"])
    opt = torch.optim.Adam(G.parameters())
    meta = load_training_state(ROOT / "checkpoints" / "celeba128" / "resume", G, D, G_ema, opt, opt, "cpu")
    assert meta["cur_nimg"] >= 406_592  # never older than the shipped model
    # A trained generator, not a copy of its average: resuming continues the run that made it.
    assert not torch.equal(G.synthesis.b128.conv1.weight, G_ema.synthesis.b128.conv1.weight)


def test_collect_hands_back_the_compact_state_log_and_newest_grid(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    (run / "compact").mkdir(parents=True)
    (run / "compact" / "meta.json").write_text("{}")
    (run / "state").mkdir()
    (run / "state" / "optim.pt").write_bytes(b"x" * 10)
    (run / "log.jsonl").write_text('{"kimg": 1}\n')
    for k in ("000050", "000100"):
        (run / f"grid-{k}.png").write_bytes(b"png")
    collect = ["bash", str(Path(__file__).parents[1] / "lab" / "collect.sh"), str(run), str(out)]
    first = subprocess.run(collect, check=True, capture_output=True, text=True)
    assert sorted(p.name for p in out.iterdir()) == ["compact", "grid-000100.png", "log.jsonl"]
    assert (out / "compact" / "meta.json").exists()
    assert "at most 8" not in first.stderr
    # More than the device hands back per call (8 files): say so, since the rest would be lost silently.
    (out / "lite").mkdir()
    for i in range(6):
        (out / "lite" / f"part-{i}").write_text("x")
    crowded = subprocess.run(collect, check=True, capture_output=True, text=True)
    assert "holds 9 files" in crowded.stderr and "at most 8" in crowded.stderr
    # A machine that returns more per call (lab/README.md): the limit is an environment variable.
    roomy = subprocess.run(collect, check=True, capture_output=True, text=True, env={**os.environ, "LAB_MAX_FILES": "9"})
    assert "holds" not in roomy.stderr


@pytest.mark.slow
def test_collect_waits_for_the_run_to_end_and_fails_fast_on_a_fresh_machine(tmp_path):
    collect = str(Path(__file__).parents[1] / "lab" / "collect.sh")
    run, out = tmp_path / "run", tmp_path / "out"
    missing = subprocess.run(["bash", collect, str(run), str(out), "60"], capture_output=True, text=True)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    run.mkdir()
    # A stand-in for the training process: its command line names training.train and --out RUN,
    # and it writes the log only as it ends, so the log comes back only if collect waited.
    fake = subprocess.Popen(["bash", "-c", 'sleep 2; echo "{}" > "$2/log.jsonl"', "training.train", "--out", str(run)])
    try:
        subprocess.run(["bash", collect, str(run), str(out), "60"], check=True, capture_output=True)
    finally:
        fake.wait()
    assert (out / "log.jsonl").read_text() == "{}\n"


def test_export_compact_keeps_G_and_halves_every_module(tmp_path):
    from training.checkpoint import export_compact, load_sharded, save_training_state

    G = torch.nn.Linear(4, 4)
    G_ema, D = torch.nn.Linear(4, 4), torch.nn.Linear(4, 1)
    opt_G, opt_D = torch.optim.Adam(G.parameters()), torch.optim.Adam(D.parameters())
    save_training_state(tmp_path / "state", G, D, G_ema, opt_G, opt_D, {"cur_nimg": 8})
    export_compact(tmp_path / "state", tmp_path / "compact")
    for name, module in (("G", G), ("G_ema", G_ema), ("D", D)):
        state = load_sharded(tmp_path / "compact", name)
        assert state["weight"].dtype == torch.float16
        assert torch.allclose(state["weight"].float(), module.weight, atol=1e-3)
    assert not (tmp_path / "compact" / "optim.pt").exists()
    assert json.loads((tmp_path / "compact" / "meta.json").read_text()) == {"cur_nimg": 8, "compact": True}
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="is this a training state folder"):
        export_compact(tmp_path / "empty", tmp_path / "out")
