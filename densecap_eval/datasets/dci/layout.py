"""The DCI release's on-disk layout, named once, and the one splits.json parser.

```
ROOT/densely_captioned_images/      RELEASE_DIR
    splits.json                     SPLITS_FILE: {split name: [record file name, ...]}
    complete/<record>.json          RECORDS_DIR
    photos/<image>                  PHOTOS_DIR (the SA-1B photos the records name)
```
The loader, the downloader and the synthetic-data writer all use these names.
"""

from __future__ import annotations

import json
from pathlib import Path

from densecap_eval.core.errors import DatasetError

RELEASE_DIR = "densely_captioned_images"
SPLITS_FILE = "splits.json"
RECORDS_DIR = "complete"
PHOTOS_DIR = "photos"


def read_splits(path: Path) -> dict[str, list[str]]:
    """splits.json at ``path`` as split name -> record file names (file order).

    Raises `DatasetError` naming the file when it is missing, not JSON, not an object of lists
    of strings.
    """
    if not path.is_file():
        raise DatasetError(f"{path} not found: the DCI release needs {SPLITS_FILE}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DatasetError(f"{path} must be a JSON object of split name -> list of record files")
    splits: dict[str, list[str]] = {}
    for split, names in raw.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DatasetError(f"{path}: split {split!r} must be a list of record file names")
        splits[split] = names
    return splits
