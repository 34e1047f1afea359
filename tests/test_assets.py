"""Assets: pinned checksums, downloads from a real (loopback) HTTP server."""

import hashlib
import http.server
import threading
from dataclasses import replace

import pytest

from edge_agent import assets
from edge_agent.assets import AssetError, ensure_asset, load_manifest


def test_manifest_pins_every_file_and_has_no_weights():
    manifest = load_manifest()
    assert {"yolov8n.pt", "yolov8n_fp32.onnx", "yolov8n_int8.onnx", "vtest.avi"} <= set(manifest)
    for asset in manifest.values():
        assert asset.sha256 and len(asset.sha256) == 64
        assert asset.licence


def test_shared_files_match_the_manifest(assets_dir):
    for name in ("yolov8n_fp32.onnx", "yolov8n_int8.onnx", "vtest.avi"):
        assert ensure_asset(name, assets_dir, allow_download=False) == assets_dir / name


@pytest.fixture
def http_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def fake_manifest(monkeypatch, entry):
    monkeypatch.setattr(assets, "load_manifest", lambda path=None: {entry.name: entry})


def test_download_verified_and_wrong_checksum_refused(tmp_path, http_server, monkeypatch):
    root, base = http_server
    (root / "clip.bin").write_bytes(b"real bytes")
    good = assets.Asset(name="clip.bin", kind="video", sha256=hashlib.sha256(b"real bytes").hexdigest(),
                        url=f"{base}/clip.bin", licence="test")
    fake_manifest(monkeypatch, good)
    target = ensure_asset("clip.bin", tmp_path / "a")
    assert target.read_bytes() == b"real bytes"

    fake_manifest(monkeypatch, replace(good, sha256="0" * 64))
    with pytest.raises(AssetError, match="must have 0000"):
        ensure_asset("clip.bin", tmp_path / "b")
    assert not (tmp_path / "b" / "clip.bin").exists(), "a file with the wrong checksum must not be kept"
    # An existing file that was tampered with is refused too.
    with pytest.raises(AssetError, match="corrupt"):
        ensure_asset("clip.bin", tmp_path / "a")


def test_unknown_name_is_explained(tmp_path):
    with pytest.raises(AssetError, match="neither in"):
        ensure_asset("no-such-model.onnx", tmp_path, allow_download=False)
