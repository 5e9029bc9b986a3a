"""The `densecap-eval` command line: thin Typer commands that build a config and call the library."""
