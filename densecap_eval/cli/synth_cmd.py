"""`densecap-eval synth OUT --images N --seed S`: write a synthetic DCI set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from densecap_eval.cli.root import app


def _parse_split_sizes(text: str | None) -> tuple[int, int, int] | None:
    from densecap_eval.synth import SynthError

    if text is None:
        return None
    try:
        parts = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise SynthError(
            f"--split-sizes must be three whole numbers train,valid,test, got {text!r}"
        ) from None
    if len(parts) != 3:
        raise SynthError(
            f"--split-sizes must be three whole numbers train,valid,test, got {text!r}"
        )
    return (parts[0], parts[1], parts[2])


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@app.command("synth")
def synth(
    out: Annotated[Path, typer.Argument(help="Folder to write densely_captioned_images/ into.")],
    images: Annotated[int, typer.Option("--images", "-n", min=1, help="Number of images.")] = 24,
    seed: Annotated[int, typer.Option(min=0, help="Random seed; same seed, same bytes.")] = 0,
    split_sizes: Annotated[
        str | None,
        typer.Option("--split-sizes", help="train,valid,test counts (default 80/10/10%)."),
    ] = None,
    width: Annotated[
        int, typer.Option(min=64, max=4096, help="Photo width in pixels (64-4096).")
    ] = 640,
    height: Annotated[
        int, typer.Option(min=64, max=4096, help="Photo height in pixels (64-4096).")
    ] = 480,
    photos: Annotated[
        bool, typer.Option("--photos/--no-photos", help="Write the JPEG photos.")
    ] = True,
    jpeg_quality: Annotated[
        int, typer.Option(min=1, max=95, help="JPEG quality of the photos (1-95).")
    ] = 90,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing OUT/densely_captioned_images written before.")
    ] = False,
    elevater: Annotated[
        bool,
        typer.Option(
            "--elevater",
            help="Write a tiny ELEVATER release instead (the 20 zero-shot test splits in their "
            "real layout, --images photos each) for `--task elevater --data-root OUT`.",
        ),
    ] = False,
) -> None:
    """Write a synthetic DCI set (procedural scenes, exact release layout) to OUT."""
    if elevater:
        from densecap_eval.datasets.elevater.synth import write_release

        keys = write_release(out, images=images, seed=seed)
        typer.echo(f"wrote {len(keys)} ELEVATER test splits ({images} photos each) to {out}")
        return
    from densecap_eval.synth import generate_dci

    result = generate_dci(
        out,
        images=images,
        seed=seed,
        split_sizes=_parse_split_sizes(split_sizes),
        width=width,
        height=height,
        photos=photos,
        jpeg_quality=jpeg_quality,
        overwrite=overwrite,
    )
    counts = ", ".join(f"{k} {v}" for k, v in result.splits.items())
    what = "records and photos" if result.photos else "records (no photos)"
    typer.echo(
        f"wrote {sum(result.splits.values())} images ({counts}) to {result.root / 'densely_captioned_images'}"
    )
    typer.echo(f"{what}: {_human(result.bytes_written)}")
