"""The Streamlit comparison dashboard (started by `densecap-eval dashboard`)."""
