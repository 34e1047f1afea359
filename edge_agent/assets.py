"""Model and demo files: looked up in the assets directory, fetched from a pinned
URL when missing, and always checked against the sha256 in models/manifest.yaml.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

MANIFEST_PATHS = (
    Path(__file__).resolve().parent.parent / "models" / "manifest.yaml",  # source checkout
    Path(__file__).resolve().parent / "manifest.yaml",  # installed wheel
)


class AssetError(RuntimeError):
    pass


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str
    sha256: str | None
    url: str | None = None
    size: int | None = None
    licence: str | None = None
    task: str | None = None
    input_size: int | None = None
    description: str | None = None
    derive: dict | None = None


def load_manifest(path: Path | None = None) -> dict[str, Asset]:
    candidates = [path] if path else [p for p in MANIFEST_PATHS if p.exists()]
    if not candidates:
        raise AssetError("models/manifest.yaml not found")
    data = yaml.safe_load(candidates[0].read_text()) or {}
    return {name: Asset(name=name, **fields) for name, fields in (data.get("assets") or {}).items()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, asset: Asset, expected: str | None = None) -> None:
    expected = expected or asset.sha256
    if expected is None or path.is_dir():
        return
    actual = sha256_of(path)
    if actual != expected:
        raise AssetError(
            f"{path} has sha256 {actual}, but {asset.name} must have {expected}; "
            "the file is corrupt or not the expected one: delete it and fetch it again"
        )


def download(url: str, target: Path, timeout: float = 60.0) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", url)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as tmp:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (pinned https URLs)
                shutil.copyfileobj(response, tmp)
        except OSError as exc:
            Path(tmp.name).unlink(missing_ok=True)
            raise AssetError(f"cannot download {url}: {exc}") from None
    os.replace(tmp.name, target)


def ensure_asset(name_or_path: str | Path, assets_dir: Path, *, allow_download: bool = True) -> Path:
    """Path to a usable file: an existing path as given, or the manifest entry
    ``name`` in ``assets_dir`` (fetched or derived when missing, checksum-checked)."""
    given = Path(name_or_path).expanduser()
    if given.is_absolute() or given.parent != Path("."):
        if not given.exists():
            raise AssetError(f"{given} does not exist")
        return given
    manifest = load_manifest()
    name = given.name
    target = assets_dir.expanduser() / name
    asset = manifest.get(name)
    if target.exists():
        if asset is not None:
            verify(target, asset, _derived_checksum(target))
        return target
    if asset is None:
        raise AssetError(
            f"{name} is neither in {assets_dir} nor listed in models/manifest.yaml; "
            "give a full path to the model or video"
        )
    if not allow_download:
        raise AssetError(f"{name} is missing from {assets_dir} and downloads are disabled")
    if asset.url:
        download(asset.url, target)
        try:
            verify(target, asset)
        except AssetError:
            target.unlink(missing_ok=True)
            raise
        return target
    if asset.derive:
        source = ensure_asset(asset.derive["from"], assets_dir, allow_download=allow_download)
        made = export_model(source, asset.derive["export"], target)
        _sidecar(made).write_text(f"{sha256_of(made)}  derived from {source.name}\n")
        return made
    raise AssetError(
        f"{name} has no public download; copy it into {assets_dir} "
        "(the Ansible rollout does this; in development scripts/setup.sh links ../shared/models)"
    )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _derived_checksum(path: Path) -> str | None:
    """A file exported on this box cannot match the published copy's checksum;
    its own checksum was recorded beside it when it was made."""
    sidecar = _sidecar(path)
    if sidecar.exists():
        return sidecar.read_text().split()[0]
    return None


def export_model(source: Path, fmt: str, target: Path | None = None, imgsz: int = 640, **options) -> Path:
    """Export with Ultralytics in a child process, so torch never stays resident in the agent
    (see :mod:`edge_agent.model_export`)."""
    from .model_export import ExportError
    from .model_export import export_model as run_export

    try:
        return run_export(source, fmt, target, imgsz=imgsz, **options)
    except ExportError as exc:
        raise AssetError(str(exc)) from None
