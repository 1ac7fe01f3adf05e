"""Staged benchmark runs (bench/staged.py): prepare here, edit/run without dlib, score here (CPU, tiny generator)."""

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_generator
from test_bench_drag import fake_detector

from bench import ablate, eval_drag, eval_inversion, staged
from bench.model_quality import DATA
from draggan.engine import DragConfig

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]
EVAL_DIR = DATA / "eval"
# Present here, absent on the GPU machine: the GPU stages must not import any of them.
ABSENT_ON_GPU = ("dlib", "face_recognition_models", "lpips", "torchvision", "matplotlib", "gradio")
TIMING = ("seconds", "seconds_drag", "ms_per_step", "seconds_per_edit", "loadavg_1min", "seconds_optimization",
          "wall_seconds")


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    """The tiny generator's folder (fp32: the GPU stage loads the very same weights)."""
    return tiny_model_dir


@pytest.fixture(scope="module")
def G_loaded(model_dir):
    return eval_drag.load_model(str(model_dir), "cpu")


def run_without_gpu_absent_modules(module: str, argvs: list[list[str]]) -> subprocess.CompletedProcess:
    """Run ``module.main(argv)`` for each argv in a fresh Python where dlib & co. cannot be imported."""
    code = "\n".join([
        "import sys",
        f"for name in {ABSENT_ON_GPU!r}:",
        "    sys.modules[name] = None  # import raises ImportError, as on the GPU machine",
        "try:",
        "    import dlib",
        "    sys.exit('dlib is importable: the block did not work')",
        "except ImportError:",
        "    pass",
        f"from bench.{module} import main",
        f"for argv in {argvs!r}:",
        "    rc = main(argv)",
        "    if rc:",
        "        sys.exit(rc)",
    ])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def table_shape(markdown: str) -> list[tuple]:
    """Each line's kind (text, or table row with its first cell and column count): the layout, not the numbers.

    The ablation's pick is left out: ties are broken by speed, which varies from run to run.
    """
    out = []
    for line in markdown.splitlines()[1:]:  # the first line names the command, device and date
        if line.startswith("|"):
            cells = line.split("|")
            out.append(("row", cells[1].replace("**(pick)**", "").strip().split(" (")[0], len(cells)))
        else:
            out.append(("text", line[:20]))
    return out


def assert_result_folder_fits(d: Path, cap: int):
    files = sorted(d.iterdir())
    assert 1 <= len(files) <= staged.MAX_RESULT_FILES
    assert all(f.stat().st_size <= cap for f in files)


# --------------------------------------------------------------------------- shared pieces


def test_chunk_writer_respects_a_tiny_cap_and_images_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = {f"im{i}": rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for i in range(7)}  # incompressible
    images["flat"] = np.full((32, 32, 3), 7, np.uint8)
    cap = 8000  # two noise images (3 KiB each) per chunk, not three
    writer = staged.ChunkWriter(tmp_path, cap_bytes=cap, max_files=6)
    placed = {k: writer.add(k, v) for k, v in images.items()}
    names = writer.close()
    assert len(names) == 4 and sorted(names) == sorted(set(placed.values()))
    for name in names:
        assert (tmp_path / name).stat().st_size <= cap
    for key, name in placed.items():
        with np.load(tmp_path / name) as z:
            np.testing.assert_array_equal(z[key], images[key])
    # More chunks than allowed, a single image over the cap, and non-uint8 images are refused.
    small = staged.ChunkWriter(tmp_path / "x", cap_bytes=cap, max_files=2)
    (tmp_path / "x").mkdir()
    with pytest.raises(staged.StageError, match="--shard"):
        for k, v in images.items():
            small.add(k, v)
    with pytest.raises(staged.StageError, match="chunk cap"):
        staged.ChunkWriter(tmp_path, cap_bytes=2000).add("big", images["im0"])
    with pytest.raises(staged.StageError, match="uint8"):
        staged.ChunkWriter(tmp_path).add("f", images["im0"].astype(np.float32))


def test_transfer_limits_are_options_with_the_lab_machines_as_defaults(tmp_path):
    """--chunk-mib, --max-files and --work-mib (lab/README.md): a results folder keeps to the file count
    and size asked for, the GPU stage refuses up front what cannot fit, the work folder its size cap."""
    p = argparse.ArgumentParser()
    staged.add_arguments(p)
    args = p.parse_args([])
    assert staged.transfer_limits(args) == {"cap_bytes": staged.MAX_CHUNK_BYTES, "max_files": staged.MAX_RESULT_FILES}
    assert args.work_mib * 2 ** 20 == staged.MAX_WORK_BYTES
    assert "at least 2" in staged.check_arguments(p.parse_args(["--max-files", "1"]))

    rng = np.random.default_rng(0)
    work = staged.Work(data={"benchmark": "t", "items": [{"id": f"i{k}"} for k in range(5)]})

    def produce(items):
        for it in items:
            yield it, {}, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)  # incompressible, ~3 KiB

    limits = staged.transfer_limits(p.parse_args(["--chunk-mib", str(8000 / 2 ** 20), "--max-files", "4"]))
    meta = staged.gpu_stage(work, produce, tmp_path / "res", {}, "test", **limits)
    assert meta["items_done"] == 5 and len(list((tmp_path / "res").iterdir())) == 4  # results.json + 3 chunks
    with pytest.raises(staged.StageError, match="--shard"):
        staged.gpu_stage(work, produce, tmp_path / "res2", {}, "test", cap_bytes=8000, max_files=3)
    work.data["image_bytes"] = 32 * 32 * 3
    with pytest.raises(staged.StageError, match="may need up to"):  # refused before any item runs
        staged.gpu_stage(work, lambda items: pytest.fail("ran"), tmp_path / "res3", {}, "test",
                         cap_bytes=8000, max_files=3)
    big = staged.Work(data={"benchmark": "t", "items": []}, files={"blob.bin": rng.bytes(20000)})
    with pytest.raises(staged.StageError, match="--work-mib"):
        big.save(tmp_path / "work", max_bytes=10000)
    big.save(tmp_path / "work2")


def test_shards_split_the_items_without_overlap():
    items = [{"id": f"i{k}"} for k in range(7)]
    assert staged.parse_shard("2/3") == (2, 3) and staged.parse_shard(None) == (1, 1)
    parts = [staged.select_items(items, (k, 3)) for k in (1, 2, 3)]
    assert [it["id"] for it in parts[0]] == ["i0", "i3", "i6"]
    assert sorted(it["id"] for p in parts for it in p) == sorted(it["id"] for it in items)
    assert staged.select_items(items, (1, 1), skip={"i0", "i1"})[0]["id"] == "i2"
    for bad in ("0/2", "3/2", "1", "a/b"):
        with pytest.raises(staged.StageError):
            staged.parse_shard(bad)


def test_work_round_trips_and_refuses_other_weights(G_loaded, tmp_path):
    work = eval_drag.prepare_protocol(G_loaded, 1, (1,), DragConfig(feature_block=4), 2, detector=fake_detector)
    work.save(tmp_path / "w")
    back = staged.Work.load(tmp_path / "w", "eval_drag")
    assert back.fingerprint == work.fingerprint and back.items == work.items
    np.testing.assert_array_equal(back.arrays[next(iter(work.arrays))], next(iter(work.arrays.values())))
    t0, t1 = eval_drag.work_tasks(work)[0], eval_drag.work_tasks(back)[0]
    np.testing.assert_array_equal(t0.handles, t1.handles)
    assert torch.equal(t0.face.ws, t1.face.ws)
    with pytest.raises(staged.StageError, match="prepared for eval_drag"):
        staged.Work.load(tmp_path / "w", "ablate")
    with pytest.raises(staged.StageError, match="other weights"):
        staged.check_model(back, tiny_generator(seed=1))
    staged.check_model(back, G_loaded)


# --------------------------------------------------------------------------- drag protocol


@pytest.mark.slow
def test_drag_stages_chained_give_the_one_shot_result_and_the_edit_stage_needs_no_dlib(G_loaded, model_dir, tmp_path):
    config = DragConfig(feature_block=4, stop_distance=0.01)  # out of reach: every drag runs all its steps
    work = eval_drag.prepare_protocol(G_loaded, 2, (1, 5), config, 3, model=str(model_dir), command="prepare",
                                      detector=fake_detector)
    work.save(tmp_path / "work")
    cap_mib = 0.01  # about one 64 px result per chunk: several chunks
    res = [tmp_path / f"r{k}" for k in range(3)]
    common = ["--work", str(tmp_path / "work"), "--device", "cpu", "--threads", "1", "--chunk-mib", str(cap_mib)]
    proc = run_without_gpu_absent_modules("eval_drag", [
        ["--stage", "edit", "--results", str(res[0]), "--shard", "1/2", *common],
        ["--stage", "edit", "--results", str(res[1]), "--shard", "2/2", "--time-budget", "0", *common],
        ["--stage", "edit", "--results", str(res[2]), "--skip-done", str(res[0]), *common],
    ])
    assert proc.returncode == 0, proc.stderr[-2000:]
    for d in res:
        assert_result_folder_fits(d, int(cap_mib * 2 ** 20))
    metas = [staged.read_results_meta(d) for d in res]
    assert [m["items_done"] for m in metas] == [2, 0, 2]
    assert len(metas[1]["not_reached"]) == 2  # the time budget stopped it before the first edit
    assert len(metas[0]["chunks"]) >= 2
    rec = metas[0]["records"][0]
    assert rec["steps"] == 3 and len(rec["final_handles"]) == 1 and metas[0]["env"]["torch"] == torch.__version__

    loaded = staged.Work.load(tmp_path / "work", "eval_drag")
    staged_result = eval_drag.score_staged(loaded, staged.load_results(loaded, res), "score", detector=fake_detector)
    one_shot = eval_drag.evaluate(G_loaded, 2, (1, 5), config, 3, model=str(model_dir), detector=fake_detector)
    assert without_timing(staged_result["rows"]) == without_timing(one_shot["rows"])
    assert staged_result["realism"] == one_shot["realism"]
    for n in ("1", "5"):
        a, b = staged_result["settings"][n], one_shot["settings"][n]
        assert {k: v for k, v in a.items() if k not in TIMING} == {k: v for k, v in b.items() if k not in TIMING}
    assert set(one_shot["meta"]) <= set(staged_result["meta"])
    assert table_shape(eval_drag.markdown_table(staged_result)) == table_shape(eval_drag.markdown_table(one_shot))
    assert "--stage edit" in staged_result["meta"]["command"] and staged_result["meta"]["missing_items"] == []

    # A shard left out stops the score, unless asked to score what there is.
    with pytest.raises(staged.StageError, match="no result"):
        staged.load_results(loaded, res[:1])
    partial = eval_drag.score_staged(loaded, staged.load_results(loaded, res[:1], allow_missing=True), "score",
                                     detector=fake_detector)
    assert len(partial["rows"]) == 2 and len(partial["meta"]["missing_items"]) == 2
    assert "had no result" in eval_drag.markdown_table(partial)
    # Results of another work are refused.
    other = eval_drag.prepare_protocol(G_loaded, 1, (1,), config, 3, detector=fake_detector)
    other.save(tmp_path / "other")
    with pytest.raises(staged.StageError, match="another work"):
        staged.load_results(staged.Work.load(tmp_path / "other", "eval_drag"), res)


def test_stage_options_are_checked_with_a_sentence(tmp_path, capsys):
    assert eval_drag.main(["--stage", "edit", "--results", str(tmp_path / "r")]) == 2
    assert "needs --work" in capsys.readouterr().err
    assert eval_drag.main(["--stage", "score", "--work", str(tmp_path)]) == 2
    assert "needs --results" in capsys.readouterr().err
    assert eval_drag.main(["--stage", "score", "--work", str(tmp_path), "--results", str(tmp_path)]) == 2
    assert "run --stage prepare" in capsys.readouterr().err
    assert ablate.main(["--stage", "prepare", "--work", str(tmp_path), "--shard", "1/2"]) == 2
    assert "GPU stage" in capsys.readouterr().err
    assert eval_inversion.main(["--stage", "run", "--work", str(tmp_path), "--results", str(tmp_path / "r"),
                                "--shard", "3/2"]) == 2
    assert "--shard" in capsys.readouterr().err


# --------------------------------------------------------------------------- ablations


def test_ablation_stages_chained_give_the_one_shot_result(G_loaded, model_dir, tmp_path):
    grid = {"feature_block": [("b3", {"feature_block": 3}), ("b4", {"feature_block": 4})],
            "r1": [("r1=1", {"r1": 1.0, "feature_block": 4}), ("r1=2", {"r1": 2.0, "feature_block": 4})]}
    base = DragConfig(feature_block=4, r1=1.0)
    work = ablate.prepare_ablation(G_loaded, grid, base, 2, "pairs", max_steps=2, first_seed=0,
                                   model=str(model_dir), detector=fake_detector)
    assert len(work.data["configs"]) == 3 and len(work.items) == 6  # "r1=1" is "b4" again: run once
    work.save(tmp_path / "work")
    assert ablate.main(["--stage", "edit", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res"),
                        "--device", "cpu", "--warmup-steps", "1"]) == 0
    loaded = staged.Work.load(tmp_path / "work", "ablate")
    results = staged.load_results(loaded, [tmp_path / "res"])
    variants = ablate.score_ablation(loaded, staged.stored_outcomes(loaded, results), detector=fake_detector)
    staged_result = {"meta": staged.staged_meta(loaded, results, "score", ablate.ablation_meta),
                     "variants": variants, "recommended": ablate.recommend(variants)}
    one_shot = ablate.ablate(G_loaded, grid, base, 2, "pairs", max_steps=2, first_seed=0, detector=fake_detector)
    assert [(v["label"], v["reused"]) for v in staged_result["variants"]] == \
           [(v["label"], v["reused"]) for v in one_shot["variants"]] == \
           [("b3", False), ("b4", False), ("r1=1", True), ("r1=2", False)]
    for a, b in zip(staged_result["variants"], one_shot["variants"]):
        assert without_timing(a["rows"]) == without_timing(b["rows"])
    assert set(one_shot["meta"]) <= set(staged_result["meta"])
    assert staged_result["recommended"].keys() == one_shot["recommended"].keys()
    assert table_shape(ablate.markdown_tables(staged_result)) == table_shape(ablate.markdown_tables(one_shot))


def test_ablation_one_shot_reports_each_variant_when_its_run_is_done(G_loaded):
    grid = {"a": [("x", {"feature_block": 3}), ("y", {"feature_block": 4})], "b": [("x again", {"feature_block": 3})]}
    seen = []
    ablate.ablate(G_loaded, grid, DragConfig(feature_block=4), 1, "pairs", max_steps=1, first_seed=0,
                  detector=fake_detector, on_variant=lambda vs: seen.append([v["label"] for v in vs]))
    assert seen == [["x"], ["x", "y"], ["x", "y", "x again"]]


# --------------------------------------------------------------------------- inversion


@pytest.mark.slow
@pytest.mark.skipif(not EVAL_DIR.is_dir(), reason="celeba128 eval faces not present")
def test_inversion_stages_chained_give_the_one_shot_tables_and_the_run_stage_needs_no_dlib(G_loaded, model_dir,
                                                                                            tmp_path):
    model_dir = shutil.copytree(model_dir, tmp_path / "model")  # with the bundled model's face template
    shutil.copy(REPO / "checkpoints" / "celeba128" / "alignment.json", model_dir / "alignment.json")
    args = dict(model=str(model_dir), n=2, budgets=[(2, 0), (2, 1)], budget_loss="l2",
                losses=["l2", "lpips-random"], loss_budget=(2, 1), eval_dir=EVAL_DIR)
    work = eval_inversion.prepare_inversion(G_loaded, **args)
    assert [f["alignment"] for f in work.data["faces"]] == ["template", "template"]
    assert len(work.data["configs"]) == 3 and work.data["by_loss"][0] == work.data["by_budget"][1]  # shared run
    work.save(tmp_path / "work")
    assert staged.folder_bytes(tmp_path / "work") < staged.MAX_WORK_BYTES
    proc = run_without_gpu_absent_modules("eval_inversion", [
        ["--stage", "run", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res"), "--device", "cpu",
         "--threads", "1"]])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_result_folder_fits(tmp_path / "res", staged.MAX_CHUNK_BYTES)
    meta = staged.read_results_meta(tmp_path / "res")
    skipped = [r for r in meta["records"] if r.get("skipped")]
    assert len(skipped) == 2 and "lpips" in skipped[0]["skipped"]  # the lpips package is absent there

    out = tmp_path / "inversion.json"
    assert eval_inversion.main(["--stage", "score", "--work", str(tmp_path / "work"), "--results",
                                str(tmp_path / "res"), "--out", str(out)]) == 0
    staged_result = json.loads(out.read_text())
    one_shot = eval_inversion.evaluate(args["model"], "cpu", **{k: v for k, v in args.items() if k != "model"},
                                       G=G_loaded)
    assert table_shape(eval_inversion.markdown_tables(staged_result)) == \
           table_shape(eval_inversion.markdown_tables(one_shot))
    for a, b in zip(staged_result["by_budget"], one_shot["by_budget"]):
        assert [r["photo"] for r in a["rows"]] == [r["photo"] for r in b["rows"]]
        assert a["summary"].keys() == b["summary"].keys()
        for ra, rb in zip(a["rows"], b["rows"]):
            assert ra.keys() == rb.keys()
            assert ra["identity_distance"] is not None and ra["psnr"] == pytest.approx(rb["psnr"], abs=0.5)
    assert staged_result["by_loss"][1]["skipped"] and not one_shot["by_loss"][1].get("skipped")
    assert "not run" in eval_inversion.markdown_tables(staged_result)


def test_ablation_identity_is_zero_for_an_unchanged_face_and_grows_with_the_edit(G_loaded, model_dir, tmp_path):
    from bench import ablation_identity

    grid = {"lr": [("still", {"lr": 1e-12}), ("fast", {"lr": 0.05})]}
    work = ablate.prepare_ablation(G_loaded, grid, DragConfig(feature_block=4), 2, "edits", max_steps=3,
                                   first_seed=0, model=str(model_dir), detector=fake_detector)
    work.save(tmp_path / "work")
    assert ablate.main(["--stage", "edit", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res"),
                        "--device", "cpu", "--warmup-steps", "1"]) == 0
    loaded = staged.Work.load(tmp_path / "work", "ablate")
    table = ablation_identity.identity_by_variant(loaded, staged.load_results(loaded, [tmp_path / "res"]),
                                                  detector=fake_detector)
    assert table["still"]["n"] == table["fast"]["n"] == 2
    assert table["still"]["mean"] < 1e-6 < table["fast"]["mean"]
