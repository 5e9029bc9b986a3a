"""Screenshot every dashboard page in a real headless Chromium; fail if a page shows an exception.

    python scripts/screenshot_dashboard.py --results RESULTS_DIR [--out docs/screenshots]

Starts the dashboard exactly as ``densecap-eval dashboard`` does (127.0.0.1, headless, no usage
statistics) on a free port, then for each page (``?page=leaderboard`` ...) loads it once in
Chromium and takes the rendered DOM and the screenshot from that same load, so the picture
is the page that was checked. A page fails when that DOM holds one of Streamlit's exception
markers, lacks the page's own heading element (the sidebar's link of the same name does not
count), or still shows a loading skeleton or a running script; a page that has not finished
is retried with more virtual time before it fails. Needs Debian's ``chromium``
(``apt-get install chromium``); exits 2 when it is missing. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

# page key -> the header the page draws (proof that it rendered)
PAGES: dict[str, str] = {
    "leaderboard": "Leaderboard",
    "charts": "Charts",
    "explorer": "Example explorer",
    "compare": "Compare two runs",
    "cards": "Run cards",
    "sweeps": "Sweeps",
    "zeroshot": "Zero-shot vs long captions",
}
EXCEPTION_MARKERS: tuple[str, ...] = ("stException", "Traceback (most recent call last)")
# Present while the app is still loading or its script is still running: not a finished page.
UNFINISHED_MARKERS: tuple[str, ...] = ("stSkeleton", "stAppSkeleton", "stStatusWidget")
ATTEMPTS = 3
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, *, timeout: float, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the dashboard exited early with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the dashboard did not answer at {url} within {timeout:.0f}s")


def chromium(binary: str, *args: str, budget_ms: int, size: str) -> str:
    with tempfile.TemporaryDirectory(prefix="densecap-chromium-") as profile:
        argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                f"--window-size={size}", f"--virtual-time-budget={budget_ms}", *args]  # fmt: skip
        done = subprocess.run(argv, capture_output=True, text=True, timeout=180, check=False)
    if done.returncode != 0:
        raise SystemExit(f"chromium failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def heading_pattern(header: str) -> re.Pattern[str]:
    """An ``<h1>``..``<h3>`` whose text starts with ``header`` (Streamlit wraps it in a span)."""
    text = re.escape(html.escape(header, quote=False))
    return re.compile(rf"<h[1-3][^>]*>\s*(?:<span[^>]*>\s*)*{text}\s*<", re.IGNORECASE)


def check_page(dom: str, header: str) -> str | None:
    """Why the page is broken, or None.

    Only an exception is final; every other answer says the page has not finished drawing.
    """
    for marker in EXCEPTION_MARKERS:
        if marker in dom:
            return f"shows an exception ({marker!r} in the page)"
    if not heading_pattern(header).search(dom):
        return f"did not render (no {header!r} heading in the page)"
    for marker in UNFINISHED_MARKERS:
        if marker in dom:
            return f"did not finish rendering ({marker!r} still in the page)"
    return None


def shoot(binary: str, address: str, shot: Path, *, budget_ms: int, size: str) -> str:
    """Load ``address`` once: write its screenshot to ``shot`` and return its DOM."""
    shot.unlink(missing_ok=True)
    dom = chromium(binary, "--dump-dom", f"--screenshot={shot}", address,
                   budget_ms=budget_ms, size=size)  # fmt: skip
    if not shot.is_file():
        raise SystemExit(f"chromium wrote no screenshot to {shot}")
    return dom


def has_content(page: str, results: Path) -> bool:
    """Whether ``page`` has something of the results to draw. The Sweeps page without sweep
    runs draws only a note, too light for Chromium's virtual time: its websocket reply can
    arrive after the budget is spent (no fetch holds virtual time back), a false failure."""
    from densecap_eval.results.store import list_runs

    if page == "zeroshot":  # its empty state is a note too: no ELEVATER run, nothing to draw
        from densecap_eval.dashboard.zeroshot_view import summaries_of

        return bool(summaries_of(list_runs(results)))
    if page != "sweeps":
        return True
    from densecap_eval.dashboard.data import sweep_grid_frames

    return bool(sweep_grid_frames(list_runs(results)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, type=Path, help="results directory to show")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--budget-ms", type=int, default=15000, help="virtual time per page")
    parser.add_argument("--size", default="1400,1600", help="window size W,H")
    parser.add_argument("--pages", nargs="*", default=list(PAGES), choices=list(PAGES))
    args = parser.parse_args(argv)

    if not Path(args.chromium).is_file():
        print(f"chromium not found at {args.chromium}: apt-get install chromium", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from densecap_eval.cli.dashboard_cmd import streamlit_command

    pages = [page for page in args.pages if has_content(page, args.results)]
    for page in sorted(set(args.pages) - set(pages)):
        print(f"{page:12s} skipped: nothing to show in {args.results} (its empty state is "
              "covered by the AppTest tests)")  # fmt: skip
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args.out.mkdir(parents=True, exist_ok=True)
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        streamlit_command(args.results, port=port), stdout=log, stderr=subprocess.STDOUT
    )
    failures: list[str] = []
    try:
        wait_healthy(url, timeout=90, server=server)
        # The first visit of each page pays for its imports (a fresh virtualenv also compiles
        # them); let it, unchecked, so every page checked below starts warm.
        for page in pages:
            chromium(args.chromium, "--dump-dom", f"{url}/?page={page}",
                     budget_ms=args.budget_ms, size=args.size)  # fmt: skip
        for page in pages:
            address = f"{url}/?page={page}"
            shot = (args.out / f"{page}.png").resolve()
            # A busy machine can leave a page half-drawn when Chromium's virtual time runs out;
            # that is retried with more time, an exception on the page is not. The DOM checked
            # and the screenshot kept always come from the same load.
            for attempt in range(ATTEMPTS):
                dom = shoot(args.chromium, address, shot,
                            budget_ms=args.budget_ms * (attempt + 1), size=args.size)  # fmt: skip
                problem = check_page(dom, PAGES[page])
                if problem is None or "exception" in problem:
                    break
            status = "ok" if problem is None else f"FAILED: {problem}"
            print(f"{page:12s} {shot}  {status}")
            if problem is not None:
                failures.append(f"{page}: {problem}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        if failures:
            log.seek(0)
            print(log.read().decode(errors="replace")[-4000:], file=sys.stderr)
        log.close()
    for failure in failures:
        print(f"error: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
