"""On-disk embedding cache: encode a region or a text once per model, ever.

Layout under the cache root::

    v1/<sha(fingerprint)[:16]>/model.json              the raw fingerprint (for info/clear)
    v1/<sha(fingerprint)[:16]>/<kind>-<sha(variant)[:12]>/
        store.json                                     kind and variant, spelled out
        shard-<time>-<pid>-<rand>.npz                  keys, embeddings (+ n_tokens, cut)
        index.npz                                      shard name per key (an accelerator)

``kind`` is ``image`` or ``text``. The image variant is the scorer's ``preprocess_id`` plus
the blind flag; the text variant is the text policy. A region's key is the sha256 of
(sha256 of the photo file's bytes, box); a text's key is the sha256 of its UTF-8 bytes.

Every file is written to a temporary file in the same folder, fsynced, then ``os.replace``d,
so a run killed at any moment leaves only whole shards behind; the next run reuses them.
Shards are the truth: the index only saves opening every shard, shards it does not list are
scanned, and unreadable or inconsistent shards are skipped with a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from densecap_eval.regions import Region

log = logging.getLogger(__name__)

LAYOUT = "v1"
_SHARD_PREFIX = "shard-"
_INDEX = "index.npz"
_CHUNK = 1 << 20

# sha256 of photo files, computed once per file per process; keyed by (path, size, mtime).
_PHOTO_HASHES: dict[tuple[str, int, int], str] = {}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def photo_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a photo file, streamed, remembered for this process while the file is unchanged."""
    st = os.stat(path)
    memo = (os.fspath(path), st.st_size, st.st_mtime_ns)
    digest = _PHOTO_HASHES.get(memo)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        digest = _PHOTO_HASHES[memo] = h.hexdigest()
    return digest


def region_key(region: Region) -> str:
    """Cache key of a region: its photo's content and its box (not the photo's path)."""
    box = "full" if region.box is None else ",".join(map(str, region.box))
    return _sha(f"{photo_sha256(region.photo)}#{box}")


def text_key(text: str) -> str:
    return _sha(text)


def _atomic_write(path: Path, write: object) -> None:
    """Write through ``write(file)`` to a temp file beside ``path``, fsync, then rename."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            write(f)  # type: ignore[operator]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    # Make the rename itself durable; not every platform can open a directory.
    with contextlib.suppress(OSError):
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _open_npz(path: Path) -> Iterator[Any]:
    """np.load on a file we close ourselves (np.load leaks its handle when the zip is broken)."""
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        yield z


def _write_json(path: Path, data: dict[str, object]) -> None:
    payload = json.dumps(data, indent=1, sort_keys=True).encode("utf-8")
    _atomic_write(path, lambda f: f.write(payload))


@dataclass(frozen=True)
class CachedRows:
    """Rows found in the cache for some keys; ``n_tokens``/``cut`` only for texts."""

    keys: list[str]
    embeddings: np.ndarray
    n_tokens: np.ndarray | None = None
    cut: np.ndarray | None = None


class CacheStore:
    """The shards of one (fingerprint, kind, variant): look keys up, append encoded batches."""

    def __init__(self, directory: Path, *, kind: str, variant: str, fingerprint: str) -> None:
        self.directory = directory
        self.kind = kind
        self.variant = variant
        self.fingerprint = fingerprint
        self._where: dict[str, str] | None = None  # key -> shard file name
        self._dirty = False

    def _ensure_dir(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        model_json = self.directory.parent / "model.json"
        if not model_json.exists():
            _write_json(model_json, {"fingerprint": self.fingerprint, "layout": LAYOUT})
        _write_json(
            self.directory / "store.json",
            {"kind": self.kind, "variant": self.variant, "fingerprint": self.fingerprint},
        )

    def _shard_names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p.name
            for p in self.directory.iterdir()
            if p.name.startswith(_SHARD_PREFIX) and p.name.endswith(".npz")
        )

    def _read_keys(self, name: str) -> list[str] | None:
        try:
            with _open_npz(self.directory / name) as z:
                keys = z["keys"]
                n = z["embeddings"].shape[0]
            if keys.ndim != 1 or len(keys) != n:
                raise ValueError(f"{len(keys)} keys for {n} rows")
            return [str(k) for k in keys]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable cache shard %s: %s", self.directory / name, exc)
            return None

    def _load_index(self) -> dict[str, str]:
        if self._where is not None:
            return self._where
        where: dict[str, str] = {}
        shards = set(self._shard_names())
        listed: set[str] = set()
        index_path = self.directory / _INDEX
        if index_path.exists():
            try:
                with _open_npz(index_path) as z:
                    names, keys, shard_of = z["shards"], z["keys"], z["shard_of"]
                for key, s in zip(keys.tolist(), shard_of.tolist(), strict=True):
                    name = str(names[s])
                    if name in shards:
                        where.setdefault(str(key), name)
                listed = {str(n) for n in names.tolist()} & shards
            except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as exc:
                log.warning("ignoring unreadable cache index %s: %s", index_path, exc)
                where, listed = {}, set()
        for name in sorted(shards - listed):
            for key in self._read_keys(name) or []:
                where.setdefault(key, name)
            self._dirty = True
        self._where = where
        return where

    def __len__(self) -> int:
        return len(self._load_index())

    def lookup(self, keys: Sequence[str]) -> CachedRows:
        """The cached rows among ``keys`` (in the order of ``CachedRows.keys``)."""
        where = self._load_index()
        by_shard: dict[str, list[str]] = {}
        for key in dict.fromkeys(keys):
            name = where.get(key)
            if name is not None:
                by_shard.setdefault(name, []).append(key)
        found: list[str] = []
        embs: list[np.ndarray] = []
        toks: list[np.ndarray] = []
        cuts: list[np.ndarray] = []
        for name, wanted in by_shard.items():
            rows = self._read_rows(name, wanted)
            if rows is None:
                for key in wanted:
                    where.pop(key, None)
                continue
            found.extend(rows.keys)
            embs.append(rows.embeddings)
            if rows.n_tokens is not None and rows.cut is not None:
                toks.append(rows.n_tokens)
                cuts.append(rows.cut)
        if not found:
            return CachedRows(keys=[], embeddings=np.zeros((0, 0), dtype=np.float32))
        if len({e.shape[1] for e in embs}) > 1:
            log.warning("cache %s holds embeddings of several sizes; ignoring it", self.directory)
            return CachedRows(keys=[], embeddings=np.zeros((0, 0), dtype=np.float32))
        return CachedRows(
            keys=found,
            embeddings=np.concatenate(embs),
            n_tokens=np.concatenate(toks) if self.kind == "text" and toks else None,
            cut=np.concatenate(cuts) if self.kind == "text" and cuts else None,
        )

    def _read_rows(self, name: str, wanted: list[str]) -> CachedRows | None:
        try:
            with _open_npz(self.directory / name) as z:
                keys = [str(k) for k in z["keys"]]
                emb = z["embeddings"]
                tok = z["n_tokens"] if self.kind == "text" else None
                cut = z["cut"] if self.kind == "text" else None
            pos = {k: i for i, k in enumerate(keys)}
            if emb.ndim != 2 or len(emb) != len(keys) or not np.isfinite(emb).all():
                raise ValueError("embeddings do not match the keys or are not finite")
            idx = np.array([pos[k] for k in wanted], dtype=np.int64)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            log.warning("ignoring unreadable cache shard %s: %s", self.directory / name, exc)
            return None
        return CachedRows(
            keys=list(wanted),
            embeddings=emb[idx].astype(np.float32),
            n_tokens=None if tok is None else tok[idx].astype(np.int64),
            cut=None if cut is None else cut[idx].astype(bool),
        )

    def put(
        self,
        keys: Sequence[str],
        embeddings: np.ndarray,
        *,
        n_tokens: Sequence[int] | None = None,
        cut: Sequence[bool] | None = None,
    ) -> None:
        """Append one encoded batch as a new shard (atomically)."""
        if not len(keys):
            return
        self._ensure_dir()
        arrays: dict[str, Any] = {
            "keys": np.asarray(list(keys), dtype="U64"),
            "embeddings": np.ascontiguousarray(embeddings, dtype=np.float32),
        }
        if self.kind == "text":
            if n_tokens is None or cut is None:
                raise ValueError("text cache entries need n_tokens and cut")
            arrays["n_tokens"] = np.asarray(n_tokens, dtype=np.int64)
            arrays["cut"] = np.asarray(cut, dtype=bool)
        name = f"{_SHARD_PREFIX}{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.npz"
        _atomic_write(self.directory / name, lambda f: np.savez(f, **arrays))
        where = self._load_index()
        for key in keys:
            where.setdefault(key, name)
        self._dirty = True

    def flush(self) -> None:
        """Rewrite the index so the next run need not open every shard."""
        if not self._dirty or self._where is None or not self.directory.is_dir():
            return
        names = sorted(set(self._where.values()))
        pos = {n: i for i, n in enumerate(names)}
        keys = list(self._where)
        arrays: dict[str, Any] = {
            "shards": np.asarray(names, dtype=str),
            "keys": np.asarray(keys, dtype="U64"),
            "shard_of": np.asarray([pos[self._where[k]] for k in keys], dtype=np.int64),
        }
        _atomic_write(self.directory / _INDEX, lambda f: np.savez(f, **arrays))
        self._dirty = False


class EmbeddingCache:
    """Embeddings on disk, keyed by model fingerprint, preprocessing or text policy, and content.

    ``EmbeddingCache()`` uses `densecap_eval.paths.default_cache_dir()`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            from densecap_eval.paths import default_cache_dir

            root = default_cache_dir()
        self.root = Path(root).expanduser()

    @property
    def _base(self) -> Path:
        return self.root / LAYOUT

    def _model_dir(self, fingerprint: str) -> Path:
        return self._base / _sha(fingerprint)[:16]

    def store(self, fingerprint: str, kind: str, variant: str) -> CacheStore:
        directory = self._model_dir(fingerprint) / f"{kind}-{_sha(variant)[:12]}"
        return CacheStore(directory, kind=kind, variant=variant, fingerprint=fingerprint)

    def image_store(self, fingerprint: str, preprocess_id: str, *, blind: bool) -> CacheStore:
        return self.store(fingerprint, "image", f"{preprocess_id}|blind={int(blind)}")

    def text_store(self, fingerprint: str, policy: str) -> CacheStore:
        return self.store(fingerprint, "text", f"policy={policy}")

    def _models(self) -> Iterable[tuple[Path, str]]:
        if not self._base.is_dir():
            return []
        out = []
        for d in sorted(self._base.iterdir()):
            if not d.is_dir():
                continue
            try:
                fp = str(json.loads((d / "model.json").read_text("utf-8"))["fingerprint"])
            except (OSError, ValueError, KeyError, TypeError):
                fp = f"? ({d.name})"
            out.append((d, fp))
        return out

    def info(self) -> dict[str, Any]:
        """{"root", "models": [{"fingerprint", "stores": [...], "entries", "bytes"}], "entries", "bytes"}."""
        models = []
        total_entries = total_bytes = 0
        for d, fp in self._models():
            stores = []
            m_entries = m_bytes = 0
            for s in sorted(p for p in d.iterdir() if p.is_dir()):
                try:
                    meta = json.loads((s / "store.json").read_text("utf-8"))
                except (OSError, ValueError):
                    meta = {"kind": s.name.split("-")[0], "variant": "?"}
                store = CacheStore(
                    s, kind=str(meta.get("kind")), variant=str(meta.get("variant")), fingerprint=fp
                )
                n = len(store)
                size = sum(p.stat().st_size for p in s.iterdir() if p.is_file())
                stores.append(
                    {
                        "kind": meta.get("kind"),
                        "variant": meta.get("variant"),
                        "entries": n,
                        "bytes": size,
                    }
                )
                m_entries += n
                m_bytes += size
            m_bytes += sum(p.stat().st_size for p in d.iterdir() if p.is_file())
            models.append(
                {"fingerprint": fp, "stores": stores, "entries": m_entries, "bytes": m_bytes}
            )
            total_entries += m_entries
            total_bytes += m_bytes
        return {
            "root": str(self.root),
            "models": models,
            "entries": total_entries,
            "bytes": total_bytes,
        }

    def clear(self, fingerprint: str | None = None) -> int:
        """Delete every model's entries, or one model's; returns the number of models removed."""
        removed = 0
        for d, fp in list(self._models()):
            if fingerprint is None or fingerprint in (fp, d.name):
                shutil.rmtree(d)
                removed += 1
        return removed
