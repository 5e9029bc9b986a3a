"""The package list: every package under densecap_eval/ (found, so a new benchmark folder ships
without editing a list) plus the two folders that live at the top level (pyproject.toml maps them)."""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["densecap_eval*"]),
        "densecap_eval.bundled",
        "densecap_eval.dashboard",
    ]
)
