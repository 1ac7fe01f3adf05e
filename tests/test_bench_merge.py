"""Pooling drag-accuracy results of disjoint pairs (bench.merge_drag)."""

import pytest

from bench.merge_drag import MergeError, merge


def result(rows, noise=0.3, config=None, device="H100"):
    counts = sorted({r["handles"] for r in rows})
    return {"meta": {"model": "m", "resolution": 128, "truncation": 0.7, "max_steps": 300,
                     "config": config or {"feature_block": 6}, "command": "c", "env": {"device": device, "date": "d"}},
            "settings": {str(n): {"md_detector_noise": noise, "edits": sum(r["handles"] == n for r in rows)}
                         for n in counts},
            "realism": {"68": {"fd": 0.06, "n": len(rows)}},
            "rows": rows}


def row(seed, md, handles=68, seconds=1.0):
    return {"handles": handles, "seed_source": seed, "seed_target": seed + 1, "md": md, "md_no_edit": 3.0,
            "seconds": seconds, "ms_per_step": 4.0, "steps": 300, "done": False, "identity_to_source": 0.4}


def test_merge_pools_rows_per_handle_count_and_weighs_detector_noise():
    a = result([row(0, 1.0), row(2, 2.0), row(4, 3.0)], noise=0.3)
    b = result([row(6, 5.0, seconds=10.0)], noise=0.7, device="CPU")
    m = merge([a, b])
    s = m["settings"]["68"]
    assert s["edits"] == 4 and s["md_mean"] == pytest.approx(2.75)
    assert s["md_detector_noise"] == pytest.approx((3 * 0.3 + 0.7) / 4)
    # Seconds from two machines are kept apart, not averaged.
    assert s["seconds_per_edit"] is None and s["ms_per_step"] is None
    assert s["timing_by_device"]["H100"]["seconds_per_edit"] == pytest.approx(1.0)
    assert s["timing_by_device"]["CPU"]["seconds_per_edit"] == pytest.approx(10.0)
    assert m["meta"]["pairs"] == 4
    assert [src["edits"]["68"] for src in m["meta"]["sources"]] == [3, 1]
    assert "first file only" in m["realism"]["68"]["note"]


def test_merge_of_one_device_pools_timings():
    m = merge([result([row(0, 1.0, seconds=1.0)]), result([row(2, 2.0, seconds=3.0)])])
    assert m["settings"]["68"]["seconds_per_edit"] == pytest.approx(2.0)
    assert "timing_by_device" not in m["settings"]["68"]


def test_merge_refuses_the_same_pair_twice_and_different_settings():
    with pytest.raises(MergeError, match="more than one file"):
        merge([result([row(0, 1.0)]), result([row(0, 2.0)])])
    with pytest.raises(MergeError, match="config"):
        merge([result([row(0, 1.0)]), result([row(2, 2.0)], config={"feature_block": 5})])
