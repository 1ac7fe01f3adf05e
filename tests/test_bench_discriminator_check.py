"""bench.discriminator_check: D's separation of reals and samples, and loading D from a training state."""

import json

import torch

from bench.discriminator_check import load_discriminator, separation
from training.checkpoint import save_training_state
from training.discriminator import Discriminator


class MeanLogit(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(1, 2, 3))[:, None]


def test_separation_scores_the_sign_rule_on_reals_and_fakes():
    bright, dark = torch.full((8, 3, 4, 4), 0.5), torch.full((8, 3, 4, 4), -0.5)
    right = separation(MeanLogit(), bright, dark)
    assert right["balanced_accuracy"] == 1.0 and right["real_logit"][0] == 0.5 and right["fake_logit"][0] == -0.5
    # A discriminator that rates the samples as more real than the reals: the stale-D case.
    assert separation(MeanLogit(), dark, bright)["balanced_accuracy"] == 0.0


def test_load_discriminator_reads_a_compact_state(tmp_path):
    D = Discriminator(16, channel_base=256, channel_max=16)
    G = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(G.parameters())
    meta = {"cur_nimg": 8, "args": {"resolution": 16, "channel_base": 256, "channel_max": 16}}
    save_training_state(tmp_path / "state", G, D, G, opt, torch.optim.Adam(D.parameters()), meta, compact=True)
    assert json.loads((tmp_path / "state" / "meta.json").read_text())["compact"]
    D2 = load_discriminator(tmp_path / "state")
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(D2(x), D.eval()(x), atol=2e-2, rtol=2e-2)  # fp16 weights
