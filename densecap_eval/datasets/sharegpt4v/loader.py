"""Read ShareGPT4V's long captions in their released layout (streamed), and fetch the JSONs.

The data root is the folder that holds the annotation JSON(s) and the photos they name (its
parent holding ``data/`` with them is accepted too: Long-CLIP's ``ShareGPT4V/``). Each
annotation file present is one split:

- ``share-captioner`` = ``share-captioner_coco_lcs_sam_1246k_1107.json`` (HF
  ``Lin-Chen/ShareGPT4V``, 1.49 GB, ~1.25 M records). Photos: ``<root>/<image>``, where
  ``image`` is ``sam/images/sa_545504.jpg``, ``coco/train2017/000000000009.jpg`` or
  ``llava/llava_pretrain/images/00000/000000010.jpg``: the root is Long-CLIP's ``data/`` folder
  (``data4v_root + image``). Long-CLIP's 1k evaluation reads the first 1,000 records.
- ``sam-10k`` = ``share4v_sam_10k.json`` (LoTLIP ``dataloaders/share4v/``, FLAIR
  ``datasets/share4v/``; 10,000 SAM records). Photos: ``<root>/<image>`` with ``image`` =
  ``sa_000048/images/sa_545504.jpg`` (SA-1B archive / images / file, LoTLIP's layout), so the
  root is LoTLIP's SA-1B root. Also accepted, in this order, when that file is absent: FLAIR's
  ``<root>/sa_000048/sa_545504.jpg`` (no ``images/``) and the share-captioner layout
  ``<root>/sam/images/sa_545504.jpg``, so one root can serve both splits.

Each file is one JSON array of ``{"id", "image", "conversations": [human turn, gpt turn]}``.
The record's text is the gpt turn's ``value`` (``conversations[1]``), unchanged: the tasks
apply the peer's rule (Long-CLIP: newlines to spaces; LoTLIP: split/rejoin). Record id = the
stored ``image`` path (one per photo); ``meta`` keeps the record's ``id`` and its index.

The 1.49 GB file is never loaded whole: `iter_json_array` decodes the array one element at a
time from fixed-size chunks, and `records` is a generator, so a task that keeps the first 1,000
records reads only the first few MB. A record without an image path, without a gpt turn at
``conversations[1]`` or with an empty caption is a bad record: skipped loudly or raised under
``strict``. A file that is not a JSON array (truncated, corrupt) raises `DatasetError`.

Bad input (docs/data.md): a photo listed twice in one file (compared after Unicode NFC) is a
bad record too (the later one); a path that is absolute or climbs out with ``..`` is refused
unopened.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any

from densecap_eval.core.errors import BadRecordError, DatasetError, DownloadError
from densecap_eval.datasets.base import DatasetBase, FingerprintFile
from densecap_eval.datasets.download import (
    DownloadMessage,
    Source,
    fetch_source,
    how_to_get,
    url_file_name,
)
from densecap_eval.datasets.guards import SeenIds
from densecap_eval.datasets.records import ImageRecord, Text

logger = logging.getLogger(__name__)

SHARE_CAPTIONER = "share-captioner"
SAM_10K = "sam-10k"
# Split name -> annotation file name, in the order splits are listed.
ANNOTATION_FILES: dict[str, str] = {
    SHARE_CAPTIONER: "share-captioner_coco_lcs_sam_1246k_1107.json",
    SAM_10K: "share4v_sam_10k.json",
}
DATA_DIR = "data"  # Long-CLIP's ShareGPT4V/data/, accepted one level down

# Where the annotation files come from. No checksum is pinned (the published values were not
# available when this was written): `download` needs the user's --sha256.
_CHECK = (
    "Hugging Face shows a file's SHA256 under 'Git LFS Details' on its page; for a GitHub file, "
    "`sha256sum` a copy you trust"
)
SOURCES: dict[str, Source] = {
    SHARE_CAPTIONER: Source(
        ANNOTATION_FILES[SHARE_CAPTIONER],
        "https://huggingface.co/datasets/Lin-Chen/ShareGPT4V/resolve/main/"
        + ANNOTATION_FILES[SHARE_CAPTIONER],
        "file",
        size="1.49 GB",
        check=_CHECK,
    ),
    # In LoTLIP's repository (not on the HF dataset); branch name unconfirmed.
    SAM_10K: Source(
        ANNOTATION_FILES[SAM_10K],
        "https://raw.githubusercontent.com/wuw2019/LoTLIP/main/dataloaders/share4v/"
        + ANNOTATION_FILES[SAM_10K],
        "file",
        check=_CHECK,
    ),
}

_CHUNK_CHARS = 1 << 20  # characters read per chunk by the streaming reader
_MAX_VALUE_CHARS = 64 << 20  # one array element longer than this is a corrupt file
_FULL_HASH_BYTES = 256 << 20  # files up to this size are hashed whole by `fingerprint`
_HEAD_BYTES = 64 << 20  # for larger ones: the head (every record a 1k/10k task reads) ...
_TAIL_BYTES = 1 << 20  # ... and the tail, with the size


# --- streaming JSON array reader --------------------------------------------------------------

_NOT_WS = re.compile(r"[^ \t\n\r]")
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]*")  # what may still follow a number's first digits


class _ArrayStream:
    """The elements of a file holding one JSON array, decoded one at a time from chunks.

    ``json.JSONDecoder.raw_decode`` parses one element from a text buffer at an index. When an
    element is cut by the end of the buffer it fails (or, for a number, may stop early at the
    buffer's end), so the next chunk is appended and the element parsed again from its start;
    consumed text is dropped from the buffer's front whenever a chunk is read. Memory: one
    chunk plus the longest element. Every error names the file and the character offset.
    """

    def __init__(self, path: Path, fh: IO[str], *, chunk_chars: int, max_value_chars: int):
        self.path = path
        self.fh = fh
        self.chunk_chars = chunk_chars
        self.max_value_chars = max_value_chars
        self.decoder = json.JSONDecoder()
        self.buf = ""
        self.pos = 0  # index into buf of the next unread character
        self.dropped = 0  # characters dropped from buf's front (for offsets)
        self.eof = False

    def _more(self) -> bool:
        """Append the next chunk (dropping what was consumed); False at end of file."""
        if self.eof:
            return False
        try:
            chunk = self.fh.read(self.chunk_chars)
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{self.path} is not UTF-8 text ({exc})") from None
        except OSError as exc:
            raise DatasetError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if not chunk:
            self.eof = True
            return False
        self.dropped += self.pos
        self.buf = self.buf[self.pos :] + chunk
        self.pos = 0
        return True

    def _peek(self) -> str | None:
        """The next non-whitespace character (not consumed), or None at end of file."""
        while True:
            found = _NOT_WS.search(self.buf, self.pos)
            if found is not None:
                self.pos = found.start()
                return self.buf[self.pos]
            self.pos = len(self.buf)
            if not self._more():
                return None

    def _fail(self, problem: str) -> DatasetError:
        offset = self.dropped + self.pos
        return DatasetError(
            f"{self.path} is not a JSON array of records: {problem} at character {offset} "
            "(a truncated or corrupt download? fetch it again)"
        )

    def _value(self) -> Any:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos > self.max_value_chars:
                    raise self._fail(
                        f"an element longer than {self.max_value_chars} characters"
                    ) from None
                if self._more():
                    continue
                raise self._fail(f"invalid JSON ({exc.msg})") from None
            except RecursionError:  # arrays nested thousands deep: not a record of the release
                raise self._fail("an element nested too deeply to decode") from None
            # A number cut by the buffer's end ("-1" of "-1.5e-7") decodes too: unless a
            # delimiter follows it within the buffer, read on and decode again.
            if _NUMBER_TAIL.fullmatch(self.buf, end) and self._more():
                continue
            self.pos = end
            return value

    def __iter__(self) -> Iterator[Any]:
        if self._peek() != "[":
            raise self._fail("it does not start with '['")
        self.pos += 1
        first = True
        while True:
            char = self._peek()
            if char is None:
                raise self._fail("the file ends inside the array")
            if char == "]":
                self.pos += 1
                if self._peek() is not None:
                    raise self._fail("data after the array")
                return
            if not first:
                if char != ",":
                    raise self._fail(f"expected ',' or ']' but found {char!r}")
                self.pos += 1
                if self._peek() is None:
                    raise self._fail("the file ends inside the array")
            yield self._value()
            first = False


def iter_json_array(
    path: Path,
    *,
    chunk_chars: int = _CHUNK_CHARS,
    max_value_chars: int = _MAX_VALUE_CHARS,
) -> Iterator[Any]:
    """The elements of the JSON array in ``path``, lazily: stopping early reads no further.

    Text is UTF-8 (a byte-order mark is allowed). Raises `DatasetError` naming the file when it
    cannot be read or is not one JSON array (found when the reader gets there).
    """
    try:
        fh = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        yield from _ArrayStream(path, fh, chunk_chars=chunk_chars, max_value_chars=max_value_chars)


# --- the dataset ------------------------------------------------------------------------------


class ShareGPT4VDataset(DatasetBase):
    """ShareGPT4V's annotation files under ``root`` (module doc): one split per file present."""

    name = "sharegpt4v"
    title = "ShareGPT4V"

    @classmethod
    def how_to_get(cls, root: Path, split: str | None = None) -> str:
        url = f" --url {SOURCES[SAM_10K].url}" if split == SAM_10K else ""
        return how_to_get(cls.name, root, options=f"{url} --sha256 HEX")

    def __init__(self, root: str | Path, *, strict: bool = False) -> None:
        super().__init__(root, strict=strict)
        for base in (self.root, self.root / DATA_DIR):
            present = [s for s, f in ANNOTATION_FILES.items() if (base / f).is_file()]
            if present:
                self.base = base
                self._splits = present
                break
        else:
            files = " or ".join(ANNOTATION_FILES.values())
            raise DatasetError(
                f"no ShareGPT4V annotation file in {self.root} (nor in {self.root / DATA_DIR}): "
                f"looked for {files}; {self.how_to_get(self.root)}"
            )

    # --- splits -------------------------------------------------------------------------------

    def splits(self) -> list[str]:
        """The splits whose annotation file is present, in `ANNOTATION_FILES` order."""
        return list(self._splits)

    def known_splits(self) -> list[str]:
        return list(ANNOTATION_FILES)

    def splits_source(self) -> Path:
        return self.base

    def annotation_path(self, split: str) -> Path:
        self.check_split(split)
        if split not in self._splits:
            raise DatasetError(
                f"{self.base / ANNOTATION_FILES[split]} not found (split {split!r}); "
                f"{self.how_to_get(self.root, split)}"
            )
        return self.base / ANNOTATION_FILES[split]

    def fingerprint_files(self, splits: Sequence[str]) -> list[FingerprintFile]:
        """Each split's file, splits sorted and deduplicated.

        A file over 256 MiB (the 1.49 GB share-captioner file) counts by its size, its first
        64 MiB (every record a 1k task reads, and then some) and its last 1 MiB instead of all
        its bytes, so a run does not re-read 1.5 GB: an edit deeper inside that keeps the size
        would go unnoticed.
        """
        sample = (_FULL_HASH_BYTES, _HEAD_BYTES, _TAIL_BYTES)
        paths = {split: self.annotation_path(split) for split in sorted(set(splits))}
        return [
            FingerprintFile(f"{split}/{path.name}", path, sample=sample)
            for split, path in paths.items()
        ]

    # --- records ------------------------------------------------------------------------------

    def records(self, split: str | None = None) -> Iterator[ImageRecord]:
        """Records of ``split`` (every split present when None), streamed in file order."""
        for name in [split] if split else list(self._splits):
            path = self.annotation_path(name)
            yield from self.iter_parsed(
                (
                    (f"record {index} of {path.name}", (name, path.name, index, raw))
                    for index, raw in enumerate(iter_json_array(path))
                ),
                lambda item: self._parse(*item),
                ids=SeenIds("image"),  # a photo listed twice would be two gallery items
                key=lambda record: record.id,
            )

    def _parse(self, split: str, file: str, index: int, raw: Any) -> ImageRecord:
        where = f"record {index} of {file}"
        if not isinstance(raw, dict):
            raise BadRecordError(f"{file}#{index}", f"{where} is not a JSON object")
        rid, image = raw.get("id"), raw.get("image")
        if isinstance(image, str) and image:
            name = image
        elif isinstance(rid, str | int) and not isinstance(rid, bool):
            name = str(rid)
        else:
            name = f"{file}#{index}"
        if not isinstance(image, str) or not image:
            raise BadRecordError(name, f"{where} has no image path")
        parts = PurePosixPath(image).parts
        if image.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", image):
            raise BadRecordError(name, f"{where}: image {image!r} is not a path inside the root")
        turns = raw.get("conversations")
        if not isinstance(turns, list) or len(turns) < 2:
            raise BadRecordError(name, f"{where} has no gpt turn (conversations[1])")
        turn = turns[1]
        if not isinstance(turn, dict) or turn.get("from") != "gpt":
            raise BadRecordError(name, f"{where}: conversations[1] is not the gpt turn")
        caption = turn.get("value")
        if not isinstance(caption, str):
            raise BadRecordError(name, f"{where}: the gpt turn has no text value")
        if not caption.strip():
            raise BadRecordError(name, f"{where}: the gpt turn's caption is empty")
        return ImageRecord(
            image,
            self.photo_path(split, image),
            (Text(caption, role="description", kind="caption"),),
            split=split,
            meta={"id": rid, "index": index, "file": file},
        )

    def photo_path(self, split: str, image: str) -> Path:
        """Where ``image`` of ``split`` lives (module doc); for sam-10k the first of LoTLIP's,
        FLAIR's and the share-captioner layout that exists, else LoTLIP's."""
        primary = self.base / image
        if split != SAM_10K:
            return primary
        parts = PurePosixPath(image).parts
        candidates = [primary]
        if len(parts) == 3 and parts[1] == "images":  # sa_000048/images/sa_545504.jpg
            candidates.append(self.base / parts[0] / parts[2])
        candidates.append(self.base / "sam" / "images" / parts[-1])
        return next((c for c in candidates if c.is_file()), primary)


# --- download ---------------------------------------------------------------------------------


def download(
    root: Path,
    *,
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
) -> str:
    """Fetch one ShareGPT4V annotation file into ``root`` (pooch, sha256 checked).

    Without ``url``: the share-captioner JSON from HF ``Lin-Chen/ShareGPT4V``. With ``url``:
    the file it names, whose name must be one of `ANNOTATION_FILES` (``share4v_sam_10k.json``
    is in LoTLIP's repository: ``SOURCES["sam-10k"]``). No checksum is pinned, so ``sha256`` is
    required. pooch downloads to a temporary file and moves it into ``root`` only after the
    checksum matched. The photos (COCO, SA-1B, LLaVA) are never downloaded: the returned
    message says where to get them and where to put them.
    """
    url = url or SOURCES[SHARE_CAPTIONER].url
    fname = url_file_name(url)
    split = next((s for s, f in ANNOTATION_FILES.items() if f == fname), None)
    if split is None:
        raise DownloadError(
            f"{url} does not name a ShareGPT4V annotation file "
            f"(expected one of: {', '.join(ANNOTATION_FILES.values())})"
        )
    root = Path(root).expanduser()
    # pooch checks the file in place: the root itself is where it stays.
    path = fetch_source(SOURCES[split], root, url=url, sha256=sha256, progress=progress,
                        downloads=root)  # fmt: skip
    # The CLI prints ``done`` on stdout and ``todo`` (the photos to fetch by hand) on stderr.
    return DownloadMessage(f"{ANNOTATION_FILES[split]} saved to {path}", photo_steps(root, split))


def photo_steps(root: Path, split: str) -> str:
    """What to fetch by hand for ``split``'s photos and where to put it (densecap-eval never
    downloads them: SA-1B needs its licence accepted, COCO and LLaVA are large)."""
    if split == SAM_10K:
        return "\n".join(
            [
                "Photos (not downloaded): SA-1B archives from "
                "https://ai.meta.com/datasets/segment-anything-downloads/ (accept the licence).",
                f"Each record's image is sa_0000NN/images/sa_*.jpg under {root}: for every "
                "archive named in the JSON (sa_000000 ... sa_000050), e.g.",
                f"  mkdir -p {root}/sa_000048/images && tar -xf sa_000048.tar "
                f"-C {root}/sa_000048/images --wildcards '*.jpg'",
                f"({root}/sa_000048/sa_*.jpg, FLAIR's layout, and {root}/sam/images/sa_*.jpg "
                "are found too.)",
            ]
        )
    return "\n".join(
        [
            f"Photos (not downloaded): each record's image is <image> under {root}:",
            f"  SAM:   SA-1B sa_000000.tar ... sa_000050.tar from "
            f"https://ai.meta.com/datasets/segment-anything-downloads/ -> {root}/sam/images/ "
            f"(e.g. tar -xf sa_000000.tar -C {root}/sam/images --wildcards '*.jpg')",
            f"  COCO:  http://images.cocodataset.org/zips/train2017.zip -> {root}/coco/ "
            f"(unzip -q train2017.zip -d {root}/coco)",
            "  LLaVA: https://huggingface.co/datasets/liuhaotian/LLaVA-Pretrain images.zip -> "
            f"{root}/llava/llava_pretrain/images/",
            "The 1k task (the first 1,000 records) needs only the photos those records name; "
            "a run names and counts every photo it cannot find.",
        ]
    )
