"""Staged benchmark runs: the dlib parts on this machine, the generator parts on a lent GPU.

The drag and inversion benchmarks need dlib (landmarks, face embeddings) before and
after the GPU work, and the GPU machine has no dlib. So each benchmark runs in three
stages that meet in two folders:

    prepare (here, dlib)  ->  WORK/     work.json [+ latents.npz] [+ faces/*.png]
    edit / run (GPU)      ->  RESULTS/  results.json + images-000.npz, images-001.npz, ...
    score (here, dlib)    <-  WORK/ + RESULTS/ [+ more RESULTS/ of other shards]

``work.json`` says everything the GPU stage does (items to run, configurations, model
and its weights' fingerprint); ``results.json`` holds one record per item run (steps,
seconds, where its image is) and where and when it ran. Result images are HxWx3 uint8
arrays in compressed ``.npz`` chunks, each at most ``--chunk-mib`` MiB, at most
``--max-files`` files per results folder, so a results folder always fits what comes
back from the GPU machine; a work folder is at most ``--work-mib`` MiB. The defaults are
the lent machine's transfer limits, which ``lab/README.md`` lists.

This module holds what the three benchmarks share: the two folder layouts, the image
chunks, the stage command-line options, sharding and the time budget. It needs only
numpy and the standard library (the model fingerprint imports torch-side code lazily).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import re
import time
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

FORMAT_VERSION = 1
WORK_FILE = "work.json"
LATENTS_FILE = "latents.npz"
RESULTS_FILE = "results.json"
CHUNK_PREFIX = "images"
# The lent GPU machine's transfer limits (lab/README.md): the defaults of --max-files, --chunk-mib
# and --work-mib, which a machine with other limits overrides.
MAX_RESULT_FILES = 7                 # results.json + up to 6 image chunks (the device returns 8 files a call)
MAX_CHUNK_BYTES = 15 * 2 ** 20       # what one file coming back from the GPU machine may weigh
MAX_WORK_BYTES = 20 * 2 ** 20        # a work folder travels in a carried folder of 25 MiB
STAGES = ("all", "prepare", "edit", "run", "score")  # "run" is "edit" by another name

# Zip bytes around each .npz member besides its deflated data: local header, zip64 extra,
# data descriptor and central-directory entry (each with the name). A generous bound.
_MEMBER_OVERHEAD = 256
_ARCHIVE_OVERHEAD = 256  # end-of-central-directory records (zip64 included)
_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


class StageError(Exception):
    """A stage cannot go on (missing or mismatched folder, a limit exceeded); the message says why and what to do."""


# --------------------------------------------------------------------------- work folder


@dataclasses.dataclass
class Work:
    """What the GPU stage needs: ``data`` (JSON), ``arrays`` (latents.npz) and ``files`` (e.g. faces/*.png).

    Built in memory by a benchmark's prepare function; :meth:`save` writes it, :meth:`load`
    reads it back (files then stay on disk and are read on demand).
    """

    data: dict
    arrays: dict = dataclasses.field(default_factory=dict)
    files: dict = dataclasses.field(default_factory=dict)   # relative path -> bytes
    directory: Path | None = None

    @property
    def fingerprint(self) -> str:
        """Hash of the work's JSON: results say which work they were made from."""
        blob = json.dumps(self.data, sort_keys=True, default=_json_default).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def benchmark(self) -> str:
        return self.data["benchmark"]

    @property
    def items(self) -> list[dict]:
        return self.data["items"]

    def file(self, relative: str) -> bytes:
        if relative in self.files:
            return self.files[relative]
        if self.directory is None:
            raise StageError(f"the work has no file {relative!r}")
        path = self.directory / relative
        if not path.is_file():
            raise StageError(f"{path} is missing from the work folder; run --stage prepare again")
        return path.read_bytes()

    def save(self, directory, max_bytes: int = MAX_WORK_BYTES) -> Path:
        """Write the work folder (replacing an earlier work there), at most ``max_bytes``; returns the work.json path."""
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise StageError(f"--work {d} is a file, not a folder")
        if d.is_dir() and any(d.iterdir()) and not (d / WORK_FILE).is_file():
            raise StageError(f"--work {d} is a folder with other things in it; give an empty or new folder")
        if (d / WORK_FILE).is_file():  # an earlier work: remove what it wrote, keep nothing stale
            old = json.loads((d / WORK_FILE).read_text())
            for rel in old.get("files", []) + [LATENTS_FILE, WORK_FILE]:
                (d / rel).unlink(missing_ok=True)
        d.mkdir(parents=True, exist_ok=True)
        data = dict(self.data, format="draggan-bench-work", version=FORMAT_VERSION, files=sorted(self.files))
        self.data = data
        if self.arrays:
            np.savez_compressed(d / LATENTS_FILE, **self.arrays)
        for rel, blob in self.files.items():
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(blob)
        path = d / WORK_FILE
        path.write_text(json.dumps(data, indent=1, default=_json_default) + "\n")
        self.directory = d
        size = folder_bytes(d)
        if size > max_bytes:
            raise StageError(f"the work folder {d} holds {size / 2**20:.1f} MiB, more than the "
                             f"{max_bytes / 2**20:.0f} MiB that can travel (--work-mib); prepare fewer items")
        return path

    @classmethod
    def load(cls, directory, benchmark: str) -> "Work":
        d = Path(directory) if directory is not None else None
        if d is None:
            raise StageError("this stage needs --work DIR (the folder written by --stage prepare)")
        path = d / WORK_FILE
        if not path.is_file():
            raise StageError(f"{path} not found: run --stage prepare --work {d} first")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise StageError(f"{path} is not valid JSON ({e}); run --stage prepare again") from None
        if data.get("format") != "draggan-bench-work" or data.get("version") != FORMAT_VERSION:
            raise StageError(f"{path} is not a work file of this version of the benchmarks")
        if data.get("benchmark") != benchmark:
            raise StageError(f"{d} was prepared for {data.get('benchmark')}, not for {benchmark}")
        arrays = {}
        if (d / LATENTS_FILE).is_file():
            with np.load(d / LATENTS_FILE) as z:
                arrays = {k: z[k] for k in z.files}
        return cls(data=data, arrays=arrays, directory=d)


def folder_bytes(directory) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())


def model_fingerprint(G) -> str:
    """Hash of the generator's weights: the GPU stage refuses work prepared with other weights."""
    from inversion.pipeline import model_fingerprint as fingerprint

    return fingerprint(G)


def check_model(work: Work, G) -> None:
    want, have = work.data.get("model_fingerprint"), model_fingerprint(G)
    if want and want != have:
        raise StageError(f"the work in {work.directory} was prepared with other weights of model "
                         f"{work.data.get('model')!r} (fingerprint {want}, this one is {have}); "
                         f"run --stage prepare again with the model the GPU stage will use")


# --------------------------------------------------------------------------- image chunks


class ChunkWriter:
    """uint8 images into ``images-NNN.npz`` files (compressed), each at most ``cap_bytes``, at most ``max_files``.

    Each image's deflated size is computed before it is placed (the same zlib settings
    as ``np.savez_compressed``), so a chunk is closed before it would pass the cap;
    the written size is checked again.
    """

    def __init__(self, directory, cap_bytes: int = MAX_CHUNK_BYTES, max_files: int = MAX_RESULT_FILES - 1,
                 prefix: str = CHUNK_PREFIX):
        self.directory = Path(directory)
        self.cap_bytes, self.max_files, self.prefix = int(cap_bytes), int(max_files), prefix
        self.written: list[str] = []
        self._pending: dict[str, np.ndarray] = {}
        self._pending_bytes = _ARCHIVE_OVERHEAD
        self._keys: set[str] = set()

    def add(self, key: str, image: np.ndarray) -> str:
        """Queue ``image`` under ``key``; returns the chunk file name it will be in."""
        image = np.ascontiguousarray(image)
        if image.dtype != np.uint8:
            raise StageError(f"result images must be uint8, got {image.dtype} for {key!r}")
        if not _KEY.match(key) or key in self._keys:
            raise StageError(f"bad or repeated image key {key!r}")
        size = deflated_npy_bytes(image) + _MEMBER_OVERHEAD + 2 * len(key)
        if size + _ARCHIVE_OVERHEAD > self.cap_bytes:
            raise StageError(f"one image ({key}) needs {size} bytes compressed, over the chunk cap of "
                             f"{self.cap_bytes} bytes; raise --chunk-mib")
        if self._pending and self._pending_bytes + size > self.cap_bytes:
            self.flush()
        self._pending[key] = image
        self._pending_bytes += size
        self._keys.add(key)
        return self._name(len(self.written))

    def flush(self) -> None:
        if not self._pending:
            return
        if len(self.written) >= self.max_files:
            raise StageError(f"the results need more than {self.max_files} image chunks of "
                             f"{self.cap_bytes / 2**20:.1f} MiB; run fewer items per call (--shard K/N)")
        name = self._name(len(self.written))
        path = self.directory / name
        np.savez_compressed(path, **self._pending)
        if path.stat().st_size > self.cap_bytes:  # the estimate is an upper bound; this is a safety net
            raise StageError(f"{path} came out at {path.stat().st_size} bytes, over the cap of {self.cap_bytes}")
        self.written.append(name)
        self._pending, self._pending_bytes = {}, _ARCHIVE_OVERHEAD

    def close(self) -> list[str]:
        self.flush()
        return list(self.written)

    def _name(self, index: int) -> str:
        return f"{self.prefix}-{index:03d}.npz"


def deflated_npy_bytes(array: np.ndarray) -> int:
    """Size of ``array`` as a deflated .npy member of an .npz (zipfile's default zlib settings)."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return len(c.compress(buf.getvalue())) + len(c.flush())


# --------------------------------------------------------------------------- results folder


class ResultWriter:
    """The GPU stage's output: records + image chunks, then ``results.json``."""

    def __init__(self, directory, work: Work, cap_bytes: int = MAX_CHUNK_BYTES, max_files: int = MAX_RESULT_FILES):
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise StageError(f"--results {self.directory} is a file, not a folder")
        self.directory.mkdir(parents=True, exist_ok=True)
        ours = re.compile(rf"^({re.escape(RESULTS_FILE)}|{CHUNK_PREFIX}-\d{{3}}\.npz)$")
        others = [p.name for p in self.directory.iterdir() if not ours.match(p.name)]
        if others:
            raise StageError(f"--results {self.directory} holds other files ({', '.join(sorted(others)[:3])}); "
                             f"give an empty or new folder")
        for p in self.directory.iterdir():  # an earlier run's results: replaced, not mixed
            p.unlink()
        self.work = work
        self.chunks = ChunkWriter(self.directory, cap_bytes, max_files - 1)  # and results.json
        self.records: list[dict] = []

    def add(self, record: dict, image: np.ndarray | None) -> None:
        """One item's record and image (None: an item that could not run; its record says why)."""
        if image is None:
            self.records.append(dict(record))
            return
        key = record["id"]
        self.records.append(dict(record, chunk=self.chunks.add(key, image), key=key))

    def close(self, meta: dict) -> Path:
        chunks = self.chunks.close()
        out = dict(meta, format="draggan-bench-results", version=FORMAT_VERSION, benchmark=self.work.benchmark,
                   work_fingerprint=self.work.fingerprint, chunks=chunks, records=self.records)
        path = self.directory / RESULTS_FILE
        path.write_text(json.dumps(out, indent=None, separators=(",", ":"), default=_json_default) + "\n")
        if path.stat().st_size > self.chunks.cap_bytes:
            raise StageError(f"{path} is {path.stat().st_size} bytes, over the per-file cap")
        return path


class ResultSet:
    """Records by item id and their images, from one or more results folders (shards of one work)."""

    def __init__(self, records: dict[str, dict], image_of: Callable[[str], np.ndarray], metas: list[dict]):
        self.records, self._image_of, self.metas = records, image_of, metas

    def image(self, item_id: str) -> np.ndarray | None:
        """The item's result image (None for a record without one)."""
        return None if self.records[item_id].get("chunk") is None else self._image_of(item_id)

    def missing(self, work: Work) -> list[str]:
        return [it["id"] for it in work.items if it["id"] not in self.records]

    @property
    def env(self) -> dict:
        """Where the GPU stage ran: the first folder with results; several devices are all named."""
        ran = [m for m in self.metas if m.get("items_done")] or self.metas
        if not ran:
            return {}
        env = dict(ran[0].get("env") or {})
        devices = list(dict.fromkeys((m.get("env") or {}).get("device", "?") for m in ran))
        if len(devices) > 1:
            env["device"] = " + ".join(devices)
        return env

    @classmethod
    def load(cls, directories: Iterable, work: Work) -> "ResultSet":
        records, sources, metas = {}, {}, []
        for d in [Path(p) for p in directories]:
            meta = read_results_meta(d)
            if meta.get("benchmark") != work.benchmark:
                raise StageError(f"{d} holds results of {meta.get('benchmark')}, not of {work.benchmark}")
            if meta.get("work_fingerprint") != work.fingerprint:
                raise StageError(f"{d} was made from another work than {work.directory} "
                                 f"(fingerprints {meta.get('work_fingerprint')} and {work.fingerprint}); "
                                 f"run the GPU stage again on this work")
            for r in meta["records"]:
                if r["id"] in records:
                    raise StageError(f"item {r['id']} is in both {sources[r['id']]} and {d}; pass each shard once")
                records[r["id"]], sources[r["id"]] = r, d
            metas.append({k: v for k, v in meta.items() if k != "records"})
        cache: dict[Path, np.lib.npyio.NpzFile] = {}

        def image_of(item_id: str) -> np.ndarray:
            r = records[item_id]
            path = sources[item_id] / r["chunk"]
            if path not in cache:
                if not path.is_file():
                    raise StageError(f"{path} is missing: copy every file of the results folder")
                cache[path] = np.load(path)
            return cache[path][r["key"]]

        return cls(records, image_of, metas)


def load_results(work: Work, directories: Iterable, allow_missing: bool = False) -> ResultSet:
    """The score stage's results; items without a result stop it unless ``allow_missing``."""
    results = ResultSet.load(directories, work)
    missing = results.missing(work)
    if missing and not allow_missing:
        raise StageError(f"{len(missing)} of {len(work.items)} items have no result (e.g. {missing[0]}): "
                         f"pass every shard's folder, run the rest with --skip-done, "
                         f"or score what there is with --allow-missing")
    return results


def stored_outcomes(work: Work, results: ResultSet) -> Iterator[tuple[dict, dict, np.ndarray | None]]:
    """(item, record, image) for every item of the work that the results hold, in the work's order."""
    for item in work.items:
        record = results.records.get(item["id"])
        if record is not None:
            yield item, record, results.image(item["id"])


def read_results_meta(path) -> dict:
    """results.json of a results folder (or the file itself)."""
    p = Path(path)
    p = p / RESULTS_FILE if p.is_dir() else p
    if not p.is_file():
        raise StageError(f"{p} not found: pass the folder the GPU stage wrote (--results)")
    try:
        meta = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise StageError(f"{p} is not valid JSON ({e})") from None
    if meta.get("format") != "draggan-bench-results" or meta.get("version") != FORMAT_VERSION:
        raise StageError(f"{p} is not a results file of this version of the benchmarks")
    return meta


def done_ids(paths: Iterable) -> set[str]:
    """Item ids already run in earlier results folders (or their results.json files)."""
    return {r["id"] for p in paths for r in read_results_meta(p)["records"]}


# --------------------------------------------------------------------------- running items


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"2/3"`` -> (2, 3): the second of three interleaved parts of the items."""
    if not text:
        return 1, 1
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise StageError(f"--shard must be K/N with 1 <= K <= N, e.g. 1/3; got {text!r}")
    return int(m.group(1)), int(m.group(2))


def select_items(items: list[dict], shard: tuple[int, int] = (1, 1), skip: set[str] = frozenset()) -> list[dict]:
    """Every N-th item from the K-th on (interleaved, so each shard gets every setting), less ``skip``."""
    k, n = shard
    return [it for i, it in enumerate(items) if i % n == k - 1 and it["id"] not in skip]


class TimeBudget:
    """Stop before an item that would end past ``seconds`` (estimated from the mean item so far)."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.start = time.perf_counter()
        self.durations: list[float] = []

    def allows_another(self) -> bool:
        if self.seconds is None:
            return True
        mean = float(np.mean(self.durations)) if self.durations else 0.0
        return time.perf_counter() - self.start + mean <= self.seconds

    def record(self, seconds: float) -> None:
        self.durations.append(seconds)


def run_items(produce: Callable[[list[dict]], Iterator[tuple[dict, dict, np.ndarray]]], items: list[dict],
              budget: TimeBudget | None = None, log=None) -> Iterator[tuple[dict, np.ndarray]]:
    """Pull (item, record, image) from ``produce(items)`` while the time budget allows; yields (record, image).

    ``produce`` is a generator, so an item is only started when asked for.
    """
    budget = budget or TimeBudget(None)
    outcomes = produce(items)
    done = 0
    while True:
        if not budget.allows_another():
            if log:
                log(f"time budget of {budget.seconds:.0f} s reached after {done} of {len(items)} items")
            outcomes.close()
            return
        t = time.perf_counter()
        try:
            item, record, image = next(outcomes)
        except StopIteration:
            return
        budget.record(time.perf_counter() - t)
        done += 1
        yield dict(record, id=item["id"]), image


def gpu_stage(work: Work, produce, results_dir, env: dict, command: str, shard: tuple[int, int] = (1, 1),
              skip: set[str] = frozenset(), time_budget: float | None = None,
              cap_bytes: int = MAX_CHUNK_BYTES, max_files: int = MAX_RESULT_FILES, extra_meta: dict | None = None,
              log=None) -> dict:
    """The edit/run stage for any benchmark: the shard's items through ``produce``, into a results folder
    of at most ``max_files`` files (results.json and image chunks) of at most ``cap_bytes`` each."""
    items = select_items(work.items, shard, skip)
    image_bytes = work.data.get("image_bytes")
    if image_bytes:  # worst case (incompressible images): refuse before hours of GPU work, not after
        room = (max_files - 1) * (cap_bytes - _ARCHIVE_OVERHEAD)
        need = len(items) * (image_bytes + _MEMBER_OVERHEAD)
        if need > room:
            parts = -(-need // room) * shard[1]
            raise StageError(f"{len(items)} result images may need up to {need / 2**20:.0f} MiB, more than "
                             f"{max_files - 1} chunks of {cap_bytes / 2**20:.1f} MiB; "
                             f"split the run with --shard K/{parts}")
    writer = ResultWriter(results_dir, work, cap_bytes, max_files)
    budget = TimeBudget(time_budget)
    t0 = time.perf_counter()
    for record, image in run_items(produce, items, budget, log):
        writer.add(record, image)
    done = {r["id"] for r in writer.records}
    meta = {"command": command, "env": env, "shard": f"{shard[0]}/{shard[1]}", "time_budget": time_budget,
            "items_selected": len(items), "items_done": len(done),
            "not_reached": [it["id"] for it in items if it["id"] not in done],
            "wall_seconds": round(time.perf_counter() - t0, 2), **(extra_meta or {})}
    path = writer.close(meta)
    if log:
        log(f"wrote {path} and {len(writer.chunks.written)} image chunk(s): {len(done)} of {len(items)} items"
            + (f", {len(meta['not_reached'])} not reached (time budget): run them with --skip-done "
               f"{Path(results_dir)}" if meta["not_reached"] else ""))
    return meta


def staged_meta(work: Work, results: ResultSet, command: str, meta_fn) -> dict:
    """A staged result's ``meta``: ``meta_fn(work, env, command, wall_seconds)`` (the benchmark's own fields)
    with the GPU stage's environment and wall time, every stage's command, where each ran, what is missing."""
    commands = [work.data.get("command") or "?"] + [m.get("command") or "?" for m in results.metas] + [command]
    wall = sum(m.get("wall_seconds") or 0 for m in results.metas)
    meta = meta_fn(work, results.env, " ; ".join(commands), wall)
    meta["stages"] = {"prepare": {"command": work.data.get("command"), "env": work.data.get("env")},
                      "gpu": [{k: m.get(k) for k in ("command", "env", "shard", "items_done", "not_reached",
                                                     "wall_seconds")} for m in results.metas],
                      "score": {"command": command}, "work_fingerprint": work.fingerprint}
    meta["missing_items"] = results.missing(work)
    return meta


# --------------------------------------------------------------------------- command line


def add_arguments(p: argparse.ArgumentParser, gpu_stage_name: str = "edit") -> None:
    """The stage options every staged benchmark takes (and --threads, --out)."""
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--out", type=Path, default=None, help="write the results JSON here (all, score)")
    g = p.add_argument_group("staged runs (dlib here, generator on a GPU machine)")
    g.add_argument("--stage", choices=STAGES, default="all",
                   help=f"all: every stage in one process (default); prepare: dlib work into --work; "
                        f"{gpu_stage_name}: the generator work (no dlib) from --work into --results; "
                        f"score: dlib on --work + --results, then the tables")
    g.add_argument("--work", type=Path, default=None, help="work folder (written by prepare, read by the others)")
    g.add_argument("--results", type=Path, nargs="+", default=None,
                   help=f"results folder ({gpu_stage_name}: one to write; score: one or more to read, e.g. shards)")
    g.add_argument("--shard", default=None, help=f"{gpu_stage_name}: run part K of N (interleaved items), e.g. 1/2")
    g.add_argument("--skip-done", type=Path, nargs="+", default=(),
                   help=f"{gpu_stage_name}: skip items already in these results folders (or results.json files)")
    g.add_argument("--time-budget", type=float, default=None,
                   help=f"{gpu_stage_name}: start no item that would end after this many seconds; "
                        f"the results say which items were not reached")
    # The transfer limits of the machine the stages meet across (defaults: the lent GPU's, lab/README.md).
    g.add_argument("--chunk-mib", type=float, default=MAX_CHUNK_BYTES / 2 ** 20,
                   help=f"{gpu_stage_name}: size cap of each file of the results folder (MiB; default %(default)s)")
    g.add_argument("--max-files", type=int, default=MAX_RESULT_FILES,
                   help=f"{gpu_stage_name}: most files in the results folder, results.json included "
                        f"(default %(default)s)")
    g.add_argument("--work-mib", type=float, default=MAX_WORK_BYTES / 2 ** 20,
                   help="prepare: size cap of the work folder (MiB; default %(default)s)")
    g.add_argument("--allow-missing", action="store_true",
                   help="score: score the items that were run even if some were not")


def transfer_limits(args) -> dict:
    """The GPU stage's ``cap_bytes`` and ``max_files`` from ``--chunk-mib`` and ``--max-files``."""
    return {"cap_bytes": int(args.chunk_mib * 2 ** 20), "max_files": args.max_files}


def check_arguments(args) -> str | None:
    """A sentence saying what is wrong with the stage options, or None."""
    stage = "edit" if args.stage == "run" else args.stage
    if stage in ("prepare", "edit", "score") and args.work is None:
        return f"--stage {args.stage} needs --work DIR"
    if stage == "edit" and (not args.results or len(args.results) != 1):
        return f"--stage {args.stage} needs one --results DIR to write"
    if stage == "score" and not args.results:
        return "--stage score needs --results DIR [DIR ...] (the folders the GPU stage wrote)"
    if stage != "edit" and (args.shard or args.skip_done or args.time_budget is not None):
        return f"--shard, --skip-done and --time-budget belong to the GPU stage, not to --stage {args.stage}"
    if args.chunk_mib <= 0 or args.work_mib <= 0:
        return "--chunk-mib and --work-mib must be positive"
    if args.max_files < 2:
        return "--max-files must be at least 2 (results.json and one image chunk)"
    try:
        parse_shard(args.shard)
    except StageError as e:
        return str(e)
    return None


def parse(parser: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, str] | None:
    """The start of every staged benchmark's main(): parse, set torch threads, pick the device
    (``--device``, else CUDA when there is one) and check the stage options.
    Returns (args, device), or None after printing what is wrong (main then returns 2)."""
    import sys

    import torch  # here, not at the top: the module itself needs only numpy (see above)

    from draggan.runtime import default_device

    args = parser.parse_args(argv)
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    problem = check_arguments(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return None
    return args, str(default_device(args.device))


@dataclasses.dataclass
class Stages:
    """What one staged benchmark does at each ``--stage``; :func:`run_stages` picks by the option.

    name      : the benchmark's name in its work folder (``Work.load`` checks it).
    run_all   : () -> result; every stage in one process.
    prepare   : () -> Work; the dlib work, saved to ``--work`` by run_stages.
    gpu       : (work) -> None; the generator work into ``--results`` (edit / run).
    score     : (work, results) -> result.
    table     : (result) -> markdown printed after ``all`` and ``score``.
    describe  : (work) -> what the prepared work holds, for the log line after prepare.
    """

    name: str
    run_all: Callable[[], dict]
    prepare: Callable[[], "Work"]
    gpu: Callable[["Work"], None]
    score: Callable[["Work", "ResultSet"], dict]
    table: Callable[[dict], str]
    describe: Callable[["Work"], str] = lambda work: f"{len(work.items)} items"


def log(message: str) -> None:
    """Progress lines of the benchmarks go to stderr, so stdout keeps only the tables."""
    import sys

    print(message, file=sys.stderr, flush=True)


def run_stages(stages: Stages, args) -> int:
    """The body of every staged benchmark's main(): the stage asked for, its errors as one line, the
    table, and the JSON at ``--out``. Returns the exit code."""
    import sys

    try:
        if args.stage == "all":
            result = stages.run_all()
        elif args.stage == "prepare":
            work = stages.prepare()
            path = work.save(args.work, int(args.work_mib * 2 ** 20))
            log(f"wrote {path}: {stages.describe(work)}, {folder_bytes(args.work) / 2**20:.2f} MiB")
            return 0
        elif args.stage in ("edit", "run"):
            stages.gpu(Work.load(args.work, stages.name))
            return 0
        else:
            work = Work.load(args.work, stages.name)
            result = stages.score(work, load_results(work, args.results, args.allow_missing))
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(stages.table(result))
    if args.out:
        write_json(result, args.out)
    return 0


def write_json(result: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=_json_default) + "\n")
    return path


def command_line(prog: str, argv) -> str:
    import sys

    return f"python -m {prog} " + " ".join(str(a) for a in (argv if argv is not None else sys.argv[1:]))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


__all__ = ["Stages", "run_stages", "log", "write_json", "ChunkWriter", "MAX_CHUNK_BYTES", "MAX_RESULT_FILES",
           "MAX_WORK_BYTES", "ResultSet", "ResultWriter",
           "StageError", "TimeBudget", "Work", "add_arguments", "check_arguments", "check_model", "done_ids",
           "gpu_stage", "load_results", "model_fingerprint", "parse_shard", "select_items", "staged_meta",
           "stored_outcomes", "transfer_limits"]
