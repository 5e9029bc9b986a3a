"""The densecap-eval dashboard: ``streamlit run app.py -- --results DIR``.

Started by ``densecap-eval dashboard --results DIR``; the results directory may also come from
the ``DENSECAP_EVAL_RESULTS`` environment variable. Each page is addressable by URL
(``?page=leaderboard``, ``charts``, ``explorer``, ``compare``, ``cards``, ``sweeps``,
``zeroshot``). The dashboard only reads the results store; it never runs a model.
"""

from __future__ import annotations

import os
import sys

import streamlit as st

from densecap_eval.core.errors import DensecapError
from densecap_eval.dashboard import cache, data, pages

DEFAULT_PAGE = "leaderboard"


def choose_page() -> str:
    """The sidebar's page picker, started from and kept in the ``page`` query parameter."""
    keys = list(pages.PAGES)
    if "page" not in st.session_state:  # first run of this session: the URL decides
        wanted = st.query_params.get("page", DEFAULT_PAGE)
        st.session_state["page"] = wanted if wanted in keys else DEFAULT_PAGE
    page = st.sidebar.radio("Page", keys, key="page",
                            format_func=lambda key: pages.PAGES[key][0])  # fmt: skip
    st.query_params["page"] = page
    return str(page)


def main() -> None:
    st.set_page_config(page_title="densecap-eval", page_icon="📊", layout="wide")
    st.sidebar.title("densecap-eval")
    page = choose_page()
    results_dir = data.results_dir_from(sys.argv[1:], os.environ)
    if results_dir is None:
        st.info(
            "No results directory given. Start the dashboard with "
            "`densecap-eval dashboard --results DIR` (or set "
            f"`{data.ENV_VAR}=DIR`)."
        )
        return
    st.sidebar.caption(f"results: `{results_dir}`")
    if st.sidebar.button("Reload results"):
        st.cache_data.clear()
    fingerprint = data.store_fingerprint(results_dir)
    try:
        runs = cache.store_runs(str(results_dir), fingerprint)
    except DensecapError as exc:
        st.error(str(exc))
        st.markdown(data.FIRST_RUN_HELP.format(results=results_dir))
        return
    if not runs:
        st.info(f"`{results_dir}` holds no runs yet.")
        st.markdown(data.FIRST_RUN_HELP.format(results=results_dir))
        return
    complete = sum(run.is_complete for run in runs)
    st.sidebar.caption(f"{complete} complete of {len(runs)} run directories")
    pages.PAGES[page][1](pages.Store(results_dir, fingerprint, runs))


if __name__ == "__main__":
    main()
