"""On-disk embedding cache: encode a region or a text once per model, ever.

Layout under the cache root::

    v2/<sha(model key)[:16]>/model.json               the model key, spelled out (for info/clear)
    v2/<sha(model key)[:16]>/<kind>-<sha(variant)[:12]>/
        store.json                                     kind and variant, spelled out
        shard-<time>-<pid>-<rand>.npz                  keys, embeddings (+ n_tokens, cut)
        index.npz                                      shard name per key (an accelerator)

The model key (`ModelKey`) is everything about the model that changes an embedding: its
fingerprint (weights by content, config, hub revision), the precision (autocast dtype) and the
device type (kernels differ in the last bits). ``kind`` is ``image`` or ``text``. The image
variant is the scorer's ``preprocess_id`` plus the blind flag; the text variant is the text
policy and the model's text limit. A region's key is the sha256 of (sha256 of the photo file's
bytes, box); a text's key is the sha256 of what the model is fed (its token ids after the text
policy: the scorer's ``text_inputs``) or, for a scorer that cannot say, of its UTF-8 bytes.
Layout ``v1`` keyed models by fingerprint alone (a bf16 embedding could be served to an fp32
run); it is never read.

Every file is written to a temporary file in the same folder, fsynced, then ``os.replace``d,
so a run killed at any moment leaves only whole shards behind; the next run reuses them.
Shards are the truth: the index only saves opening every shard, shards it does not list are
scanned, and unreadable or inconsistent shards are skipped with a warning. A cache that cannot
be written (a full disk, a file-size limit, a read-only folder) is one warning per cache root;
the run goes on, keeping what it encodes in memory only, and the shards already there stay
readable (a failed write leaves no file behind).
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
from typing import TYPE_CHECKING, Any

import numpy as np

from densecap_eval.core.hashing import file_sha256
from densecap_eval.datasets.regions import Region

if TYPE_CHECKING:
    from densecap_eval.scorers.base import Scorer

log = logging.getLogger(__name__)

LAYOUT = "v2"
_SHARD_PREFIX = "shard-"
_INDEX = "index.npz"
_CHUNK = 1 << 20
# Cache roots this process could not write to: warned about once, then written no more.
_unwritable: set[Path] = set()


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def photo_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a photo file, streamed, remembered for this process while the file is unchanged."""
    return file_sha256(path, persist=False)


@dataclass(frozen=True)
class ModelKey:
    """What, besides an input's own content, decides its embedding: the cache's model key."""

    fingerprint: str  # weights by content, config, hub revision (`Scorer.fingerprint`)
    precision: str  # fp32 | fp16 | bf16 (the autocast dtype)
    device_type: str  # cpu | cuda | mps

    @classmethod
    def of(cls, scorer: Scorer) -> ModelKey:
        # str() of a torch.device is "type[:index]"; a plain "cuda:1" string reads the same
        return cls(
            fingerprint=str(scorer.fingerprint),
            precision=str(scorer.precision),
            device_type=str(scorer.device).split(":")[0],
        )

    def to_dict(self) -> dict[str, str]:
        return {"fingerprint": self.fingerprint, "precision": self.precision,
                "device_type": self.device_type}  # fmt: skip

    @property
    def digest(self) -> str:
        return _sha(json.dumps(self.to_dict(), sort_keys=True))


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


def _damage(exc: BaseException) -> str:
    """What is wrong with an unreadable cache file, in words (not numpy's advice to unpickle).

    np.load reads a file that is neither .npz nor .npy as a pickle and, with pickles refused,
    says "contains pickled data ... load it unsafely": here that only means "not an .npz".
    """
    if isinstance(exc, ValueError) and "pickle" in str(exc):
        return "not an .npz archive"
    if isinstance(exc, (zipfile.BadZipFile, EOFError)):
        return "truncated or not an .npz archive"
    if isinstance(exc, KeyError):
        detail = str(exc.args[0]) if exc.args else "an entry"
        if detail.endswith(" is not a file in the archive"):  # numpy's words for a lost array
            detail = f"array {detail.split()[0]!r}"
        return f"missing {detail}"
    if isinstance(exc, OSError):
        return f"cannot read it: {exc.strerror or exc}"
    return str(exc)


def _warn_corrupt_shard(path: Path, exc: BaseException) -> None:
    log.warning(
        "cache shard %s is corrupt (%s); ignoring it, its entries will be recomputed",
        path,
        _damage(exc),
    )


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
    """The shards of one (model key, kind, variant): look keys up, append encoded batches."""

    def __init__(self, directory: Path, *, kind: str, variant: str, model: ModelKey) -> None:
        self.directory = directory
        self.kind = kind
        self.variant = variant
        self.model = model
        self._where: dict[str, str] | None = None  # key -> shard file name
        self._dirty = False

    @property
    def _root(self) -> Path:
        return self.directory.parent.parent.parent  # <root>/v2/<model>/<kind-variant>

    def _writable(self) -> bool:
        return self._root not in _unwritable

    def _write_failed(self, exc: OSError) -> None:
        """Stop writing this cache root, with one warning (the run itself goes on)."""
        if self._root not in _unwritable:
            _unwritable.add(self._root)
            log.warning(
                "cannot write the embedding cache in %s (%s); going on without caching, "
                "so this run's encodings will not be reused",
                self._root,
                exc.strerror or exc,
            )

    def _ensure_dir(self) -> None:
        if self.directory.is_dir():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        model_json = self.directory.parent / "model.json"
        if not model_json.exists():
            _write_json(model_json, {**self.model.to_dict(), "layout": LAYOUT})
        _write_json(
            self.directory / "store.json",
            {"kind": self.kind, "variant": self.variant, **self.model.to_dict()},
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
            _warn_corrupt_shard(self.directory / name, exc)
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
                log.warning(
                    "cache index %s is corrupt (%s); ignoring it, the shards are read instead",
                    index_path,
                    _damage(exc),
                )
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
            _warn_corrupt_shard(self.directory / name, exc)
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
        if not len(keys) or not self._writable():
            return
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
        try:
            self._ensure_dir()
            _atomic_write(self.directory / name, lambda f: np.savez(f, **arrays))
        except OSError as exc:
            self._write_failed(exc)
            return
        where = self._load_index()
        for key in keys:
            where.setdefault(key, name)
        self._dirty = True

    def flush(self) -> None:
        """Rewrite the index so the next run need not open every shard."""
        if not self._dirty or self._where is None or not self.directory.is_dir():
            return
        if not self._writable():
            return
        names = sorted(set(self._where.values()))
        pos = {n: i for i, n in enumerate(names)}
        keys = list(self._where)
        arrays: dict[str, Any] = {
            "shards": np.asarray(names, dtype=str),
            "keys": np.asarray(keys, dtype="U64"),
            "shard_of": np.asarray([pos[self._where[k]] for k in keys], dtype=np.int64),
        }
        try:
            _atomic_write(self.directory / _INDEX, lambda f: np.savez(f, **arrays))
        except OSError as exc:
            self._write_failed(exc)
            return
        self._dirty = False


class EmbeddingCache:
    """Embeddings on disk, keyed by `ModelKey`, preprocessing or text policy, and content.

    ``EmbeddingCache()`` uses `densecap_eval.core.paths.default_cache_dir()`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            from densecap_eval.core.paths import default_cache_dir

            root = default_cache_dir()
        self.root = Path(root).expanduser()

    @property
    def _base(self) -> Path:
        return self.root / LAYOUT

    def store(self, model: ModelKey, kind: str, variant: str) -> CacheStore:
        directory = self._base / model.digest[:16] / f"{kind}-{_sha(variant)[:12]}"
        return CacheStore(directory, kind=kind, variant=variant, model=model)

    def image_store(self, model: ModelKey, preprocess_id: str, *, blind: bool) -> CacheStore:
        return self.store(model, "image", f"{preprocess_id}|blind={int(blind)}")

    def text_store(self, model: ModelKey, policy: str, *, max_tokens: int | None) -> CacheStore:
        return self.store(model, "text", f"policy={policy}|max_tokens={max_tokens}")

    def _models(self) -> Iterable[tuple[Path, ModelKey]]:
        if not self._base.is_dir():
            return []
        out = []
        for d in sorted(self._base.iterdir()):
            if not d.is_dir():
                continue
            try:
                meta = json.loads((d / "model.json").read_text("utf-8"))
                key = ModelKey(str(meta["fingerprint"]), str(meta["precision"]),
                               str(meta["device_type"]))  # fmt: skip
            except (OSError, ValueError, KeyError, TypeError):
                key = ModelKey(f"? ({d.name})", "?", "?")
            out.append((d, key))
        return out

    def info(self) -> dict[str, Any]:
        """{"root", "models": [{"fingerprint", "precision", "device_type", "stores": [...],
        "entries", "bytes"}], "entries", "bytes"}."""
        models = []
        total_entries = total_bytes = 0
        for d, key in self._models():
            stores = []
            m_entries = m_bytes = 0
            for s in sorted(p for p in d.iterdir() if p.is_dir()):
                try:
                    meta = json.loads((s / "store.json").read_text("utf-8"))
                except (OSError, ValueError):
                    meta = {"kind": s.name.split("-")[0], "variant": "?"}
                store = CacheStore(
                    s, kind=str(meta.get("kind")), variant=str(meta.get("variant")), model=key
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
                {**key.to_dict(), "stores": stores, "entries": m_entries, "bytes": m_bytes}
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
        for d, key in list(self._models()):
            if fingerprint is None or fingerprint in (key.fingerprint, d.name):
                shutil.rmtree(d)
                removed += 1
        return removed
