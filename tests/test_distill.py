"""Distilling a generator into one with fewer top-block channels (training/distill.py)."""

import json

import pytest
import torch

from draggan.models.networks import Generator, GeneratorConfig
from training.distill import build_parser, distill, prune_into, shared_blocks, slim_config


def tiny_teacher(seed=0) -> Generator:
    torch.manual_seed(seed)
    # channels: 4..8 px -> 32, 16 px -> 16, 32 px -> 8 (channel_base 256, channel_max 32)
    cfg = GeneratorConfig(z_dim=16, w_dim=16, img_resolution=32, mapping_layers=2, channel_base=256, channel_max=32)
    G = Generator(cfg).eval().requires_grad_(False)
    with torch.no_grad():  # non-trivial noise strengths and biases, so that copying them matters
        for name, p in G.named_parameters():
            if name.endswith("noise_strength") or name.endswith(".bias"):
                p.uniform_(-0.3, 0.3)
    return G


def test_slim_config_halves_only_the_capped_blocks():
    teacher = tiny_teacher()
    cfg = slim_config(teacher.cfg, 128)
    assert [cfg.channels(r) for r in (4, 8, 16, 32)] == [32, 16, 8, 4]
    student = Generator(cfg)
    assert shared_blocks(teacher, student) == 1  # only the 4 px block keeps its shape


def test_prune_into_same_shape_copies_the_teacher_exactly():
    teacher = tiny_teacher()
    student = Generator(slim_config(teacher.cfg, teacher.cfg.channel_base))
    assert prune_into(teacher, student) == len(teacher.synthesis.blocks())
    ws = teacher.mapping(torch.randn(3, teacher.z_dim))
    assert torch.equal(student.mapping(torch.zeros(1, 16)), teacher.mapping(torch.zeros(1, 16)))
    assert torch.allclose(student.synthesis(ws), teacher.synthesis(ws), atol=1e-6)


def test_prune_into_keeps_the_shared_prefix_and_starts_close_to_the_teacher():
    teacher = tiny_teacher()
    student = Generator(slim_config(teacher.cfg, 128)).eval().requires_grad_(False)
    n = prune_into(teacher, student)
    ws = teacher.mapping(torch.randn(8, teacher.z_dim))
    _, t_feat = teacher.synthesis(ws, return_features=True)
    _, s_feat = student.synthesis(ws, return_features=True)
    for i in range(n):
        assert torch.equal(t_feat[i], s_feat[i])
    target = teacher.synthesis(ws)
    pruned = (student.synthesis(ws) - target).abs().mean()
    random = (Generator(slim_config(teacher.cfg, 128)).synthesis(ws) - target).abs().mean()
    assert pruned < random  # the kept channels carry the teacher's image, random weights do not


@pytest.mark.slow
def test_distill_lowers_the_loss_and_leaves_shared_layers_frozen(tmp_path, monkeypatch):
    teacher = tiny_teacher()
    teacher_dir = tmp_path / "teacher"
    teacher.save_pretrained(teacher_dir, dtype=torch.float32)
    out = tmp_path / "run"
    args = build_parser().parse_args(["--teacher", str(teacher_dir), "--out", str(out), "--channel-base", "128",
                                      "--kimg", "0.64", "--batch", "16", "--tick-kimg", "0.16", "--lr", "3e-3",
                                      "--perceptual", "pyramid", "--device", "cpu"])
    distill(args)
    ticks = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [t["l1"] for t in ticks if "l1" in t]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    student = Generator.from_pretrained(out / "student")
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key in [k for k in t_state if k.startswith("mapping.") or k.startswith("synthesis.b4.")]:
        assert torch.equal(t_state[key], s_state[key]), key
    assert not torch.equal(student.synthesis.b32.torgb.weight,
                           Generator(slim_config(teacher.cfg, 128)).synthesis.b32.torgb.weight)
    # --resume continues counting from the saved student.
    args.kimg, args.resume = 0.8, True
    assert distill(args)["nimg"] == 800
    assert json.loads((out / "student" / "distill.json").read_text())["nimg"] == 800


def test_image_fidelity_ranks_a_pruned_student_above_a_random_one():
    from bench.distill_fidelity import image_fidelity

    teacher = tiny_teacher()
    pruned = Generator(slim_config(teacher.cfg, 128)).eval()
    prune_into(teacher, pruned)
    random = Generator(slim_config(teacher.cfg, 128)).eval()
    a, b = image_fidelity(pruned, teacher, num=4), image_fidelity(random, teacher, num=4)
    assert a["l1_mean"] < b["l1_mean"] and a["psnr_mean_db"] > b["psnr_mean_db"]
    assert len(a["psnr_db"]) == 4
    assert image_fidelity(teacher, teacher, num=2)["l1_mean"] == 0.0
