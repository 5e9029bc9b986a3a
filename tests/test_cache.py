"""The embedding cache: reuse across runs, resume after Ctrl-C or kill -9, corrupt files ignored."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from fake_scorers import FakeEmbeddingScorer
from PIL import Image
from typer.testing import CliRunner

from densecap_eval.cli.app import app
from densecap_eval.datasets.regions import Region
from densecap_eval.engine import EmbeddingCache, ScoreTable, ScoringPlan, score_plan
from densecap_eval.engine.cache import LAYOUT, region_key, text_key

TEXTS = ["a red cube", "a blue ball on the grass", "one", "two words here", "a b c d e f g h"]
BOXES = [None, (0, 0, 20, 20), (5, 5, 30, 25)]


def _plan(root: Path, n_photos: int = 3) -> ScoringPlan:
    rng = np.random.default_rng(3)
    root.mkdir(parents=True, exist_ok=True)
    plan = ScoringPlan()
    for i in range(n_photos):
        path = root / f"photo_{i}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 256, (32, 40, 3), dtype=np.uint8)).save(path)
        for box in BOXES:
            plan.add_region(Region(str(path), box))
    for text in TEXTS:
        plan.add_text(text)
    return plan


def _same(a: ScoreTable, b: ScoreTable) -> None:
    assert a.image_embeddings is not None and b.image_embeddings is not None
    assert a.text_embeddings is not None and b.text_embeddings is not None
    assert np.array_equal(a.image_embeddings, b.image_embeddings)
    assert np.array_equal(a.text_embeddings, b.text_embeddings)
    assert np.array_equal(a.text_tokens, b.text_tokens)
    assert np.array_equal(a.text_cut, b.text_cut)
    n_r, n_t = len(a.image_embeddings), len(a.text_embeddings)
    assert np.array_equal(
        a.matrix(list(range(n_r)), list(range(n_t))), b.matrix(list(range(n_r)), list(range(n_t)))
    )


def _run(
    plan: ScoringPlan, cache: EmbeddingCache | None, **kw: object
) -> tuple[ScoreTable, FakeEmbeddingScorer]:
    scorer_kw = {k: kw.pop(k) for k in ("interrupt_after", "version", "max_text_tokens") if k in kw}
    scorer = FakeEmbeddingScorer(**scorer_kw)  # type: ignore[arg-type]
    table = score_plan(
        scorer, plan, batch_size=kw.pop("batch_size", 4), cache=cache, num_workers=0, **kw
    )  # type: ignore[arg-type]
    return table, scorer


def test_second_run_encodes_nothing(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "photos")
    cache = EmbeddingCache(tmp_path / "cache")
    first, s1 = _run(plan, cache)
    assert s1.encoded_images == 9 and len(s1.encoded_texts) == 5
    second, s2 = _run(plan, EmbeddingCache(tmp_path / "cache"))
    assert s2.encoded_images == 0 and s2.encoded_texts == []
    _same(first, second)
    _same(first, _run(plan, None)[0])


def test_no_cache_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a default root of this test's own: other tests of the session may fill the shared one
    default_root = tmp_path / "user-cache"
    monkeypatch.setenv("DENSECAP_EVAL_CACHE", str(default_root))
    plan = _plan(tmp_path / "photos")
    _run(plan, None)
    assert not (default_root / LAYOUT).exists() or not any((default_root / LAYOUT).iterdir())


def test_default_root_is_the_user_cache(tmp_path: Path) -> None:
    assert EmbeddingCache().root == Path(os.environ["DENSECAP_EVAL_CACHE"])


def test_keys_follow_content_not_paths(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "a")
    cache = EmbeddingCache(tmp_path / "cache")
    _run(plan, cache)
    # The same photos under another folder: all hits.
    (tmp_path / "b").mkdir()
    for p in (tmp_path / "a").iterdir():
        (tmp_path / "b" / p.name).write_bytes(p.read_bytes())
    _, moved = _run(_plan(tmp_path / "b"), cache)
    assert moved.encoded_images == 0
    # A changed photo is a miss for its 3 regions only.
    changed = tmp_path / "b" / "photo_1.png"
    # (noise: crops of one solid colour would be identical pixels, one encoding)
    noise = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    Image.fromarray(noise).save(changed)
    _, after = _run(_plan(tmp_path / "b"), cache)
    assert after.encoded_images == 3
    assert region_key(Region(str(changed))) != region_key(
        Region(str(tmp_path / "a" / "photo_1.png"))
    )
    assert text_key("a") != text_key("a ")


@pytest.mark.parametrize(
    ("change", "images", "texts"),
    [
        ({"version": "v2"}, 9, 5),  # another model: nothing shared
        ({"text_policy": "chunk-mean"}, 0, 5),  # another text policy: images shared
        ({"blind": True}, 1, 0),  # blind: a miss; its grey crops are one input; texts shared
    ],
)
def test_key_parts(tmp_path: Path, change: dict[str, object], images: int, texts: int) -> None:
    plan = _plan(tmp_path / "photos")
    cache = EmbeddingCache(tmp_path / "cache")
    _run(plan, cache)
    _, scorer = _run(plan, cache, **change)
    assert scorer.encoded_images == images
    assert len(scorer.encoded_texts) == texts


def test_ctrl_c_resumes_with_identical_numbers(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "photos")
    cache = EmbeddingCache(tmp_path / "cache")
    # 5 texts in batches of 4 (2 calls), then regions: the 4th call (2nd region batch) is "Ctrl-C".
    with pytest.raises(KeyboardInterrupt):
        _run(plan, cache, interrupt_after=3)
    resumed, scorer = _run(plan, cache)
    assert scorer.encoded_texts == []
    assert scorer.encoded_images == 9 - 4
    _same(resumed, _run(plan, None)[0])


KILLER = textwrap.dedent(
    """
    import json, os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from fake_scorers import FakeEmbeddingScorer
    from densecap_eval.engine import EmbeddingCache, ScoringPlan, score_plan
    from densecap_eval.datasets.regions import Region

    spec = json.load(open(sys.argv[2]))
    plan = ScoringPlan()
    for photo, box in spec["regions"]:
        plan.add_region(Region(photo, None if box is None else tuple(box)))
    for text in spec["texts"]:
        plan.add_text(text)

    class KilledMidRun(FakeEmbeddingScorer):
        def encode_pixels(self, pixels):
            if self.encoded_images >= 4:
                os.kill(os.getpid(), signal.SIGKILL)
            return super().encode_pixels(pixels)

    score_plan(KilledMidRun(), plan, batch_size=2, cache=EmbeddingCache(sys.argv[3]), num_workers=0)
    """
)


def test_kill_9_resumes_with_identical_numbers(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "photos")
    spec = {"regions": [[r.photo, r.box] for r in plan.regions], "texts": plan.texts}
    (tmp_path / "plan.json").write_text(json.dumps(spec))
    (tmp_path / "killer.py").write_text(KILLER)
    proc = subprocess.run(
        [
            sys.executable,
            str(tmp_path / "killer.py"),
            str(Path(__file__).parent),
            str(tmp_path / "plan.json"),
            str(tmp_path / "cache"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    cache = EmbeddingCache(tmp_path / "cache")
    resumed, scorer = _run(plan, cache)
    # Texts (3 shards of 2) and two region batches of 2 were written before the kill.
    assert scorer.encoded_texts == []
    assert scorer.encoded_images == 9 - 4
    _same(resumed, _run(plan, None)[0])


def _store_dir(root: Path, kind: str) -> Path:
    (d,) = [p for p in (root / LAYOUT).glob(f"*/{kind}-*") if p.is_dir()]
    return d


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_keys", "index", "temp"])
def test_damaged_files_are_ignored(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    plan = _plan(tmp_path / "photos")
    cache_root = tmp_path / "cache"
    clean, _ = _run(plan, EmbeddingCache(cache_root))
    store = _store_dir(cache_root, "image")
    shards = sorted(store.glob("shard-*.npz"))
    assert len(shards) == 3  # 9 regions in batches of 4
    lost = 0
    if damage == "garbage":
        shards[0].write_bytes(b"not a zip file at all")
        lost = 4
    elif damage == "truncated":
        data = shards[1].read_bytes()
        shards[1].write_bytes(data[: len(data) // 2])
        lost = 4
    elif damage == "wrong_keys":
        with np.load(shards[0]) as z:  # 1 key for 4 rows: the whole shard is unusable
            keys, rows = z["keys"], z["embeddings"]
        np.savez(shards[0], keys=keys[:1], embeddings=rows)
        lost = 4
    elif damage == "index":
        (store / "index.npz").write_bytes(b"PK\x03\x04 broken")
    elif damage == "temp":  # what a kill -9 during a write could leave
        (store / ".tmp-0123-shard-x.npz").write_bytes(b"PK\x03\x04 half")
        (store / "shard-99999999999999999999-1-deadbeef.npz.part").write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="densecap_eval.engine.cache"):
        again, scorer = _run(plan, EmbeddingCache(cache_root))
    assert scorer.encoded_images == lost
    _same(clean, again)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    if damage in ("garbage", "truncated", "wrong_keys"):
        damaged = shards[1] if damage == "truncated" else shards[0]
        # one line that names the file, says it is corrupt and that its entries are recomputed
        assert any(
            m.startswith(f"cache shard {damaged} is corrupt (")
            and m.endswith("its entries will be recomputed")
            for m in warnings
        ), warnings
    if damage == "index":
        assert any(
            m.startswith(f"cache index {store / 'index.npz'} is corrupt") for m in warnings
        ), warnings
    if damage == "temp":
        assert warnings == []
    # numpy's advice for pickles is noise here: a shard is never a pickle
    assert not any("pickle" in m or "unsafely" in m for m in warnings), warnings
    if damage == "garbage":
        assert any("(not an .npz archive)" in m for m in warnings), warnings


def test_unindexed_shards_are_found(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "photos")
    cache_root = tmp_path / "cache"
    _run(plan, EmbeddingCache(cache_root))
    (_store_dir(cache_root, "image") / "index.npz").unlink()
    _, scorer = _run(plan, EmbeddingCache(cache_root))
    assert scorer.encoded_images == 0
    assert (_store_dir(cache_root, "image") / "index.npz").exists()


def test_texts_cache_token_counts_and_cut(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "photos")
    cache = EmbeddingCache(tmp_path / "cache")
    first, _ = _run(plan, cache, max_text_tokens=5)
    second, scorer = _run(plan, cache, max_text_tokens=5)
    assert scorer.encoded_texts == []
    # whitespace words + 2; limit 5
    assert second.text_tokens.tolist() == [5, 8, 3, 5, 10]
    assert second.text_cut.tolist() == [False, True, False, False, True]
    _same(first, second)


def test_info_and_clear(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "photos")
    cache = EmbeddingCache(tmp_path / "cache")
    assert cache.info()["entries"] == 0
    _run(plan, cache)
    _run(plan, cache, version="v2", blind=True)
    info = cache.info()
    models = info["models"]
    assert isinstance(models, list) and len(models) == 2
    assert info["entries"] == 2 * (9 + 5)
    assert isinstance(info["bytes"], int) and info["bytes"] > 0
    fps = sorted(m["fingerprint"] for m in models)
    assert fps == sorted(
        [FakeEmbeddingScorer().fingerprint, FakeEmbeddingScorer(version="v2").fingerprint]
    )
    assert cache.clear(FakeEmbeddingScorer(version="v2").fingerprint) == 1
    assert [m["fingerprint"] for m in cache.info()["models"]] == [FakeEmbeddingScorer().fingerprint]  # type: ignore[union-attr]
    assert cache.clear() == 1
    assert cache.info()["entries"] == 0


def test_cache_cli(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "photos")
    root = tmp_path / "cache"
    _run(plan, EmbeddingCache(root))
    _run(plan, EmbeddingCache(root), version="v2")
    runner = CliRunner()
    res = runner.invoke(app, ["cache", "info", "--cache-dir", str(root), "--format", "json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["entries"] == 28 and len(data["models"]) == 2
    res = runner.invoke(app, ["cache", "info", "--cache-dir", str(root)])
    assert res.exit_code == 0 and "total: 2 models, 28 entries" in res.output
    fp = FakeEmbeddingScorer(version="v2").fingerprint
    res = runner.invoke(
        app, ["cache", "clear", "--cache-dir", str(root), "--model-fingerprint", fp, "--yes"]
    )
    assert res.exit_code == 0 and "removed 1 model" in res.output
    res = runner.invoke(app, ["cache", "clear", "--cache-dir", str(root)], input="n\n")
    assert res.exit_code == 1 and EmbeddingCache(root).info()["entries"] == 14
    res = runner.invoke(app, ["cache", "clear", "--cache-dir", str(root)], input="y\n")
    assert res.exit_code == 0 and EmbeddingCache(root).info()["entries"] == 0
    res = runner.invoke(
        app, ["cache", "clear", "--cache-dir", str(root), "--model-fingerprint", "nope", "-y"]
    )
    assert res.exit_code == 1
    res = runner.invoke(app, ["cache", "info", "--cache-dir", str(root), "--format", "xml"])
    assert res.exit_code != 0
