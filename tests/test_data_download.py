"""Downloads from a local HTTP server: mirror order, md5, truncation, atomic rename, offline errors.

No test touches the internet: mirrors are replaced with ``dataclasses.replace``
(or ``$MNISTKIT_MIRRORS``) by URLs on 127.0.0.1.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from helpers import free_port

from mnistkit.data import fetch_dataset, get_dataset_spec, load_dataset
from mnistkit.data.dataset_registry import IDX_FILES
from mnistkit.data.idx import encode_idx
from mnistkit.errors import ConfigError, DatasetNotFoundError


def tiny_files() -> dict[str, bytes]:
    """Four small gzipped IDX files: 6 train and 4 test images."""
    tensors = [
        torch.full((6, 28, 28), 9, dtype=torch.uint8),
        torch.arange(6, dtype=torch.uint8),
        torch.zeros(4, 28, 28, dtype=torch.uint8),
        torch.arange(4, dtype=torch.uint8),
    ]
    return {name: gzip.compress(encode_idx(t), mtime=0) for name, t in zip(IDX_FILES, tensors, strict=True)}


FILES = tiny_files()


class Handler(BaseHTTPRequestHandler):
    """/good/<file> serves the file; /badmd5/ serves other bytes; /truncated/ lies in Content-Length."""

    def do_GET(self):
        self.server.hits.append(self.path)  # before answering: the client may finish before this thread goes on
        _, mode, name = self.path.split("/", 2)
        body = FILES.get(name)
        if body is None or mode not in ("good", "badmd5", "truncated"):
            self.send_error(404)
            return
        if mode == "badmd5":
            body = body[:-1] + bytes([body[-1] ^ 1])
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (100 if mode == "truncated" else 0)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.hits = []
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def dead_url():
    """A URL on a port nobody listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}/dead/"


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MNISTKIT_DATA", raising=False)
    monkeypatch.delenv("MNISTKIT_MIRRORS", raising=False)
    monkeypatch.setenv("MNISTKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MNISTKIT_DOWNLOAD_TIMEOUT", "5")
    return tmp_path


def tiny_spec(*mirrors: str):
    md5 = tuple(hashlib.md5(FILES[n]).hexdigest() for n in IDX_FILES)
    return dataclasses.replace(
        get_dataset_spec("mnist"), name="tiny", md5=md5, mirrors=mirrors, torchvision_name="Tiny", sizes=(6, 4)
    )


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


def test_good_mirror_wins_after_bad_ones(server, dead_url, isolated):
    base, httpd = server
    spec = tiny_spec(dead_url, f"{base}/badmd5/", f"{base}/truncated/", f"{base}/good/")
    ds = load_dataset(spec, data_dir=isolated / "d")
    assert (len(ds.train), len(ds.test)) == (6, 4) and int(ds.train.images[0, 0, 0]) == 9
    folder = isolated / "d" / "Tiny" / "raw"
    assert ds.source == str(folder)
    assert leftovers(folder) == sorted(IDX_FILES)  # no .part files
    assert sum(h.startswith("/good/") for h in httpd.hits) == 4


def test_second_load_does_not_download(server, isolated):
    base, httpd = server
    spec = tiny_spec(f"{base}/good/")
    load_dataset(spec)
    assert (isolated / "cache" / "Tiny" / "raw" / IDX_FILES[0]).is_file()  # default: the cache dir
    count = len(httpd.hits)
    load_dataset(spec)
    assert len(httpd.hits) == count


@pytest.mark.parametrize("mode, said", [("badmd5", "wrong md5"), ("truncated", "truncated: got")])
def test_bad_downloads_never_keep_final_name(server, isolated, mode, said):
    base, _ = server
    spec = tiny_spec(f"{base}/{mode}/")
    with pytest.raises(DatasetNotFoundError, match=said):
        load_dataset(spec, data_dir=isolated / "d")
    assert leftovers(isolated / "d" / "Tiny" / "raw") == []


def test_offline_error_lists_places_mirrors_and_fix(dead_url, isolated, monkeypatch):
    monkeypatch.setenv("MNISTKIT_DATA", str(isolated / "env"))
    spec = tiny_spec(dead_url, dead_url.replace("dead", "dead2"))
    with pytest.raises(DatasetNotFoundError) as info:
        fetch_dataset(spec, data_dir=isolated / "d", progress=False)
    message = str(info.value)
    assert "dataset 'tiny' not found; looked in:" in message
    for place in (isolated / "d", isolated / "env", isolated / "data", isolated / "cache"):
        assert str(place) in message
    assert f"{dead_url}train-images-idx3-ubyte.gz: unreachable" in message
    assert "/dead2/train-images-idx3-ubyte.gz: unreachable" in message
    assert "Tiny/raw" in message and "MNISTKIT_DATA" in message


def test_env_mirrors_override(server, isolated, monkeypatch):
    base, _ = server
    monkeypatch.setenv("MNISTKIT_MIRRORS", f"{base}/badmd5/, {base}/good/")
    folder = fetch_dataset(tiny_spec("http://never.invalid/"), progress=False)
    assert folder == isolated / "cache" / "Tiny" / "raw"


def test_stale_part_files_are_removed_and_never_used(server, isolated):
    base, _ = server
    folder = isolated / "cache" / "Tiny" / "raw"
    folder.mkdir(parents=True)
    stale = folder / ".train-images-idx3-ubyte.gz.x1.part"
    stale.write_bytes(b"half a download")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fresh = folder / ".train-labels-idx1-ubyte.gz.x2.part"
    fresh.write_bytes(b"someone else's live download")
    ds = load_dataset(tiny_spec(f"{base}/good/"))
    assert len(ds.train) == 6 and not stale.exists() and fresh.exists()


def test_partial_folder_downloads_only_missing_files(server, isolated):
    base, httpd = server
    folder = isolated / "cache" / "Tiny" / "raw"
    folder.mkdir(parents=True)
    for name in IDX_FILES[:3]:
        (folder / name).write_bytes(FILES[name])
    load_dataset(tiny_spec(f"{base}/good/"))
    assert httpd.hits == [f"/good/{IDX_FILES[3]}"]


def test_bad_timeout_env(isolated, monkeypatch, server):
    monkeypatch.setenv("MNISTKIT_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="MNISTKIT_DOWNLOAD_TIMEOUT='soon'"):
        load_dataset(tiny_spec(f"{server[0]}/good/"))
