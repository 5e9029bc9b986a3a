"""Everything that changes a score is in the cache key: change one input alone -> a miss.

The engine-level table varies each key input of a fake scorer (its fingerprint, precision,
device type, preprocessing, text limit) and each run option (text policy, blind) one at a time
and counts what had to be encoded again. The backend tests show that what the fingerprint
stands for really moves it: weights replaced by others of the same shape (open_clip, hf, VLM),
and a new hub revision.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from fake_scorers import FakeEmbeddingScorer
from hub_cache import hub_snapshot
from PIL import Image
from tiny_models import make_tiny_hf_clip, make_tiny_open_clip

from densecap_eval.core.hashing import clear_process_memo, file_sha256
from densecap_eval.datasets.regions import Region
from densecap_eval.engine.cache import EmbeddingCache, ModelKey
from densecap_eval.engine.engine import score_plan
from densecap_eval.engine.plan import ScoringPlan


class KeyedFake(FakeEmbeddingScorer):
    """The fake with each cache-key input settable on its own."""

    def __init__(
        self,
        *,
        version: str = "w1",
        precision: str = "fp32",
        device: str = "cpu",
        preprocess: str = "resize-8",
        max_text_tokens: int = 12,
    ) -> None:
        super().__init__(version=version, device=device, max_text_tokens=max_text_tokens)
        self.precision = precision
        self._preprocess = preprocess

    @property
    def preprocess_id(self) -> str:
        return self._preprocess


@pytest.fixture
def plan(tmp_path: Path) -> ScoringPlan:
    photo = tmp_path / "photo.png"
    # a pattern, not one colour: the two regions must differ in pixels (identical pixels are
    # one input, encoded once)
    pattern = Image.new("RGB", (16, 16), (200, 40, 40))
    pattern.paste((20, 200, 90), (4, 2, 7, 6))
    pattern.save(photo)
    p = ScoringPlan()
    p.add_region(Region(photo=str(photo), box=None))
    p.add_region(Region(photo=str(photo), box=(0, 0, 8, 8)))
    p.add_text("a red square on a plain background")
    p.add_text("a blue circle")
    return p


BASE: dict[str, Any] = {"text_policy": "truncate", "blind": False}

# (what changed, scorer attributes, run options, image hit expected, text hit expected)
KEY_TABLE: list[tuple[str, dict[str, Any], dict[str, Any], bool, bool]] = [
    ("nothing", {}, {}, True, True),
    ("weights by content / hub revision (fingerprint)", {"version": "w2"}, {}, False, False),
    ("precision", {"precision": "bf16"}, {}, False, False),
    ("device type", {"device": "mps"}, {}, False, False),
    ("preprocessing", {"preprocess": "resize-8-bicubic"}, {}, False, True),
    ("text limit", {"max_text_tokens": 6}, {}, True, False),
    ("text policy", {}, {"text_policy": "chunk-mean"}, True, False),
    ("blind", {}, {"blind": True}, False, True),
]


@pytest.mark.parametrize(
    ("what", "attrs", "options", "image_hit", "text_hit"), KEY_TABLE, ids=[r[0] for r in KEY_TABLE]
)
def test_each_key_input_alone_decides_hit_or_miss(
    plan: ScoringPlan,
    tmp_path: Path,
    what: str,
    attrs: dict[str, Any],
    options: dict[str, Any],
    image_hit: bool,
    text_hit: bool,
) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    first = KeyedFake()
    score_plan(first, plan, cache=cache, num_workers=0, **BASE)
    assert first.encoded_images == 2 and len(first.encoded_texts) == 2

    second = KeyedFake(**attrs)
    score_plan(second, plan, cache=cache, num_workers=0, **{**BASE, **options})
    assert (second.encoded_images == 0) is image_hit, what
    assert (len(second.encoded_texts) == 0) is text_hit, what


def test_model_key_names_every_input() -> None:
    key = ModelKey.of(KeyedFake(precision="bf16", device="cuda:1"))
    assert key.to_dict() == {
        "fingerprint": KeyedFake().fingerprint,
        "precision": "bf16",
        "device_type": "cuda",
    }
    assert key.digest != ModelKey.of(KeyedFake(precision="bf16")).digest


def test_cache_info_shows_precision_and_device(plan: ScoringPlan, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "cache")
    score_plan(KeyedFake(precision="bf16"), plan, cache=cache, num_workers=0)
    (model,) = cache.info()["models"]
    assert (model["precision"], model["device_type"]) == ("bf16", "cpu")


# -- what the fingerprint stands for ----------------------------------------------------------


def _load(spec: str) -> Any:
    from densecap_eval.scorers import load_scorer

    return load_scorer(spec, "cpu")


def _rewrite_safetensors_same_shape(path: Path) -> None:
    """Replace every tensor by another of the same shape and dtype (new values)."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    save_file({k: (v + 0.5 if v.is_floating_point() else v) for k, v in state.items()}, str(path))


def test_open_clip_checkpoint_fingerprint_follows_weight_content(tmp_path: Path) -> None:
    spec = make_tiny_open_clip(tmp_path)
    before = _load(spec).fingerprint
    assert _load(spec).fingerprint == before  # nothing changed: same key
    _rewrite_safetensors_same_shape(tmp_path / "tiny_open_clip.safetensors")
    assert _load(spec).fingerprint != before


def test_hf_local_fingerprint_follows_weight_content(tmp_path: Path) -> None:
    spec = make_tiny_hf_clip(tmp_path / "clip")
    before = _load(spec).fingerprint
    assert _load(spec).fingerprint == before
    _rewrite_safetensors_same_shape(tmp_path / "clip" / "model.safetensors")
    assert _load(spec).fingerprint != before


def test_vlm_fingerprint_follows_weight_content(tmp_path: Path) -> None:
    from tiny_vlms import build_llava

    folder = build_llava(tmp_path / "llava")
    spec = f"captionlik:{folder}"
    before = _load(spec).fingerprint
    assert _load(spec).fingerprint == before
    (weights,) = folder.glob("*.safetensors")
    _rewrite_safetensors_same_shape(weights)
    assert _load(spec).fingerprint != before


def test_hub_model_fingerprint_has_revision_and_weight_content(tmp_path: Path) -> None:
    """A hub name resolved from a local hub cache (offline), in a fresh process per layout."""
    source = Path(make_tiny_hf_clip(tmp_path / "src").removeprefix("hf:"))
    hub = tmp_path / "hub"
    commit_a, commit_b = "a" * 40, "b" * 40
    hub_snapshot(hub, "org/tiny-clip", commit_a, source)
    script = textwrap.dedent(
        """
        import json, sys
        from pathlib import Path
        from densecap_eval.scorers import load_scorer
        out = []
        for commit in sys.argv[2:]:
            Path(sys.argv[1], "models--org--tiny-clip", "refs", "main").write_text(commit)
            s = load_scorer("hf:org/tiny-clip", "cpu")
            out.append([s.fingerprint, s.provenance["revision"], s.provenance["weights_sha256"]])
        print(json.dumps(out))
        """
    )
    # commit b: the same files under a new revision; then commit a again (unchanged -> same key)
    hub_snapshot(hub, "org/tiny-clip", commit_b, source)
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(hub), commit_a, commit_b, commit_a],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (fp_a, rev_a, files_a), (fp_b, rev_b, files_b), again = json.loads(
        done.stdout.strip().splitlines()[-1]
    )
    assert (rev_a, rev_b) == (commit_a, commit_b)  # the resolved revision is recorded
    assert files_a == files_b and len(files_a["model.safetensors"]) == 64  # content hashed
    assert fp_a != fp_b  # a new revision is a new key
    assert again[0] == fp_a


def test_hub_identity_hashes_the_snapshot_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from densecap_eval.scorers import common

    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"weights-1")
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub, "try_to_load_from_cache", lambda *a, **k: str(snapshot / "config.json")
    )
    first = common.hub_weights_identity("org/m", "c" * 40, ("*.safetensors",))
    assert first["revision"] == "c" * 40
    assert first["weights_sha256"] == {
        "model.safetensors": file_sha256(snapshot / "model.safetensors")
    }
    (snapshot / "model.safetensors").write_bytes(b"weights-2")
    os.utime(snapshot / "model.safetensors", ns=(1, 1))  # a new mtime: hashed again
    assert common.hub_weights_identity("org/m", "c" * 40, ("*.safetensors",)) != first


def test_weight_hashes_are_memoised_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second process only stats the file: the digest comes from the on-disk memo."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x" * 4096)
    digest = file_sha256(weights)
    clear_process_memo()  # as a new process would start

    def no_read(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the memoised file was read again")

    monkeypatch.setattr(Path, "open", no_read)
    assert file_sha256(weights) == digest
    monkeypatch.undo()
    weights.write_bytes(b"y" * 4096)  # changed in place: size same, mtime new
    os.utime(weights, ns=(10**9, 10**9))
    assert file_sha256(weights) != digest


def test_open_clip_tag_fingerprint_hashes_the_downloaded_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pretrained tag is identified by the file open_clip cached for it, not the tag alone."""
    import open_clip.pretrained as ocp

    from densecap_eval.scorers.openclip import pretrained_file_sha256

    weights = tmp_path / "open_clip_model.safetensors"
    weights.write_bytes(b"tag weights v1")
    asked: list[tuple[str, str]] = []

    def cfg(arch: str, tag: str) -> dict[str, str]:
        asked.append((arch, tag))
        return {"hf_hub": "org/repo/"}

    monkeypatch.setattr(ocp, "get_pretrained_cfg", cfg)
    monkeypatch.setattr(ocp, "download_pretrained", lambda cfg, **kw: str(weights))
    first = pretrained_file_sha256("ViT-B-32", "openai")
    assert asked == [("ViT-B-32", "openai")] and first == file_sha256(weights)
    weights.write_bytes(b"tag weights v2")  # the hub repo re-uploaded under the same tag
    os.utime(weights, ns=(5 * 10**9, 5 * 10**9))
    assert pretrained_file_sha256("ViT-B-32", "openai") not in (None, first)
    monkeypatch.setattr(ocp, "get_pretrained_cfg", lambda arch, tag: {})
    assert pretrained_file_sha256("ViT-B-32", "nope") is None  # unknown: the tag stands for it


def test_longclip_protocol_is_in_the_fingerprint(tmp_path: Path) -> None:
    """``longclip:FILE?protocol=longclip`` (weights rounded through fp16) is another key."""
    from tiny_longtext import save_longclip

    path = tmp_path / "longclip-T.pt"
    save_longclip(path)
    ours, theirs = _load(f"longclip:{path}"), _load(f"longclip:{path}?protocol=longclip")
    assert ours.fingerprint != theirs.fingerprint
    assert ModelKey.of(ours).digest != ModelKey.of(theirs).digest


def test_fgclip_mode_and_protocol_are_in_the_key(tmp_path: Path) -> None:
    """``fgclip:DIR?mode=short`` is another model key; ``protocol=fgclip`` another image key."""
    from tiny_fgclip import make_tiny_fgclip

    folder = make_tiny_fgclip(tmp_path / "fgclip")
    long, short = _load(f"fgclip:{folder}"), _load(f"fgclip:{folder}?mode=short")
    square = _load(f"fgclip:{folder}?protocol=fgclip")
    assert ModelKey.of(long).digest != ModelKey.of(short).digest
    assert (long.max_text_tokens, short.max_text_tokens) == (248, 77)
    assert square.preprocess_id != long.preprocess_id


def test_flair_mode_is_in_the_key(plan: ScoringPlan, tmp_path: Path) -> None:
    """``flair:FILE?mode=global`` is another model key: never served the late mode's tokens."""
    from tiny_flair import make_tiny_flair

    path = make_tiny_flair(tmp_path / "flair")
    late, glob = _load(f"flair:{path}"), _load(f"flair:{path}?mode=global")
    assert ModelKey.of(late).digest != ModelKey.of(glob).digest
    cache = EmbeddingCache(tmp_path / "cache")
    late_table = score_plan(late, plan, cache=cache, num_workers=0)
    glob_table = score_plan(glob, plan, cache=cache, num_workers=0)
    assert len(cache.info()["models"]) == 2  # two keys, each with its own entries
    assert late_table.image_embeddings.shape[1] > glob_table.image_embeddings.shape[1]


def test_fgclip2_mode_is_in_the_key(tmp_path: Path) -> None:
    """``fgclip2:DIR?mode=short`` (64 positions, the tower's own head) is another model key."""
    from tiny_fgclip2 import make_tiny_fgclip2

    folder = make_tiny_fgclip2(tmp_path / "fgclip2")
    long, short = _load(f"fgclip2:{folder}"), _load(f"fgclip2:{folder}?mode=short")
    assert ModelKey.of(long).digest != ModelKey.of(short).digest
    assert (long.max_text_tokens, short.max_text_tokens) == (196, 64)


def test_lotlip_bert_folder_content_is_in_the_fingerprint(tmp_path: Path) -> None:
    """``lotlip:FILE?bert=DIR``: the BERT folder's files are hashed into the key."""
    import shutil

    from tiny_longtext import save_lotlip, write_bert_folder

    save_lotlip(tmp_path / "model.pt")
    bert = write_bert_folder(tmp_path / "bert")
    first = _load(f"lotlip:{tmp_path / 'model.pt'}?bert={bert}")
    other = tmp_path / "bert2"
    shutil.copytree(bert, other)
    assert _load(f"lotlip:{tmp_path / 'model.pt'}?bert={other}").fingerprint == first.fingerprint
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "layer_norm_eps": 1e-6}))
    assert _load(f"lotlip:{tmp_path / 'model.pt'}?bert={other}").fingerprint != first.fingerprint
