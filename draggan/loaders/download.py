"""Download checkpoints into a local cache, safely and fast to fail.

* Cache directory: ``$DRAGGAN_CACHE`` or ``~/.cache/draggan``.
* Atomic: bytes go to a temporary file next to the target, renamed into place only
  when complete (and, where the registry knows it, when the SHA-256 matches).
  A failed or interrupted download leaves nothing behind.
* Offline-friendly: ``DRAGGAN_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) fails at once;
  otherwise the connection attempt gives up after a few seconds
  (``$DRAGGAN_CONNECT_TIMEOUT``, default 5). Either way the message says where to
  put the file by hand.
* Progress: a tqdm bar on stderr, or a callback ``progress(done_bytes, total_or_None)``.

Standard library only (urllib), so proxies from the usual environment variables work.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .errors import CheckpointError

CONNECT_TIMEOUT_S = 5.0   # give up quickly when offline
READ_TIMEOUT_S = 60.0     # but tolerate slow servers once the transfer runs
CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")


class DownloadError(CheckpointError):
    """A download failed, was refused (offline) or did not match its checksum."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("DRAGGAN_CACHE") or Path.home() / ".cache" / "draggan").expanduser()


def cache_dir_or_default(cache_dir=None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def is_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("DRAGGAN_OFFLINE", "HF_HUB_OFFLINE"))


def url_cache_path(url: str, cache_dir=None) -> Path:
    """Where a plain URL is cached: ``<cache>/urls/<hash>/<file name>`` (names may collide across hosts)."""
    name = Path(urllib.parse.urlparse(url).path).name or "checkpoint"
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return cache_dir_or_default(cache_dir) / "urls" / digest / name


def sha256_of(path, chunk=CHUNK) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _manual_hint(url, dest) -> str:
    return f"Download {url} yourself and place it at {dest}"


def verify_cached(dest: Path, sha256: str | None) -> None:
    """Check a cached file's hash once (a ``.sha256`` note next to it remembers the result)."""
    if not sha256:
        return
    note = dest.with_name(dest.name + ".sha256")
    try:
        if note.read_text().strip() == sha256 and note.stat().st_mtime >= dest.stat().st_mtime:
            return
    except OSError:
        pass
    actual = sha256_of(dest)
    if actual != sha256.lower():
        raise DownloadError(f"{dest}: SHA-256 is {actual}, expected {sha256}; the file is corrupt or a "
                            "different model. Delete it and download again.")
    try:
        note.write_text(sha256 + "\n")
    except OSError:
        pass


def cached_download(url: str, dest, sha256: str | None = None, progress=True,
                    connect_timeout: float | None = None, read_timeout: float = READ_TIMEOUT_S) -> Path:
    """Return ``dest``, downloading ``url`` there first if it is not cached yet."""
    dest = Path(dest)
    if dest.is_file():
        verify_cached(dest, sha256)
        return dest
    return download(url, dest, sha256=sha256, progress=progress,
                    connect_timeout=connect_timeout, read_timeout=read_timeout)


def _progress_reporter(progress, name, total):
    """(update(n_new_bytes, done), close()) for True / False / a callback."""
    if callable(progress):
        progress(0, total)
        return (lambda n, done: progress(done, total)), (lambda: None)
    if not progress:
        return (lambda n, done: None), (lambda: None)
    try:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                   leave=False)
        return (lambda n, done: bar.update(n)), bar.close
    except ImportError:  # plain fallback
        def update(n, done):
            pct = f"{100 * done / total:5.1f}%" if total else f"{done / 2**20:.1f} MiB"
            print(f"\r{name}: {pct}", end="", file=sys.stderr, flush=True)
        return update, (lambda: print(file=sys.stderr))


def download(url: str, dest, sha256: str | None = None, progress=True,
             connect_timeout: float | None = None, read_timeout: float = READ_TIMEOUT_S) -> Path:
    """Download ``url`` to ``dest`` atomically; verify ``sha256`` when given."""
    dest = Path(dest)
    if is_offline():
        raise DownloadError(f"offline mode (DRAGGAN_OFFLINE / HF_HUB_OFFLINE is set): not downloading. "
                            f"{_manual_hint(url, dest)}")
    if connect_timeout is None:
        connect_timeout = float(os.environ.get("DRAGGAN_CONNECT_TIMEOUT", CONNECT_TIMEOUT_S))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.part")
    hasher = hashlib.sha256()
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "draggan-studio"})
        try:
            response = urllib.request.urlopen(request, timeout=connect_timeout)
        except urllib.error.HTTPError as e:
            raise DownloadError(f"{url}: the server answered HTTP {e.code} {e.reason}. {_manual_hint(url, dest)}") from e
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise DownloadError(f"could not reach {url} ({reason}). Are you offline? {_manual_hint(url, dest)}") from e
        with response:
            _widen_read_timeout(response, read_timeout)
            total = response.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            update, close = _progress_reporter(progress, dest.name, total)
            done = 0
            try:
                with open(tmp, "wb") as f:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        f.write(block)
                        hasher.update(block)
                        done += len(block)
                        update(len(block), done)
            finally:
                close()
        if total is not None and done != total:
            raise DownloadError(f"download of {url} stopped after {done} of {total} bytes. {_manual_hint(url, dest)}")
        if sha256 and hasher.hexdigest() != sha256.lower():
            raise DownloadError(f"{url}: SHA-256 mismatch (got {hasher.hexdigest()}, expected {sha256}); "
                                "the file was discarded")
        os.replace(tmp, dest)
        if sha256:
            dest.with_name(dest.name + ".sha256").write_text(sha256 + "\n")
        return dest
    except DownloadError:
        raise
    except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as e:  # e.g. IncompleteRead
        raise DownloadError(f"download of {url} failed ({type(e).__name__}: {e}). {_manual_hint(url, dest)}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _widen_read_timeout(response, seconds):
    # urlopen's timeout covers connecting *and* every read; once connected, allow slow reads.
    sock = getattr(getattr(getattr(response, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        try:
            sock.settimeout(seconds)
        except OSError:
            pass
