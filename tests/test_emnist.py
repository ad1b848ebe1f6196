"""EMNIST from NIST's archive layout, on tiny synthetic archives (never the real 536 MB file).

The synthetic ``gzip.zip`` has the real member names (``gzip/emnist-<split>-...``)
and stores each image transposed, as NIST does, with an upright horizontal bar
at row 3: after loading, the bar must be back on row 3.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from synthetic import BAR_ROW, emnist_members, write_zip

from mnistkit.data import get_dataset_spec, list_datasets, load_dataset
from mnistkit.errors import DataFormatError, DatasetNotFoundError, MnistkitError


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.delenv("MNISTKIT_DATA", raising=False)
    monkeypatch.delenv("MNISTKIT_MIRRORS", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_all_six_splits_are_registered():
    names = [n for n in list_datasets() if n.startswith("emnist-")]
    assert names == [f"emnist-{s}" for s in ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")]
    assert len(get_dataset_spec("emnist-byclass").class_names) == 62
    assert len(get_dataset_spec("emnist-balanced").class_names) == 47
    assert get_dataset_spec("emnist-letters").class_names[:3] == ("a", "b", "c")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("layout", ["zip", "folder", "torchvision-flat"])
def test_loads_zip_or_extracted_folder_upright_with_labels_from_zero(isolated, layout):
    members = emnist_members()
    if layout == "zip":
        write_zip(isolated / "root" / "EMNIST" / "raw" / "gzip.zip", members)
    else:
        folder = isolated / "root" / ("gzip" if layout == "folder" else "EMNIST/raw")
        folder.mkdir(parents=True)
        for name, data in members.items():
            (folder / Path(name).name).write_bytes(data)
    ds = load_dataset("emnist-letters", data_dir=isolated / "root", download=False)
    assert ds.class_names == [chr(c) for c in range(ord("a"), ord("z") + 1)]
    assert (len(ds.train), len(ds.test)) == (94, 47)
    assert ds.train.labels.min() == 0 and ds.train.labels.max() == 25  # 1..26 in the files
    assert (ds.train.images[:, BAR_ROW, :] == 255).all()  # transposed back upright
    assert ds.train.images[:, :, BAR_ROW].sum() == 255 * len(ds.train)  # only the bar's own pixel
    balanced = load_dataset("emnist-balanced", data_dir=isolated / "root", download=False)
    assert balanced.class_names[36:] == list("abdefghnqrt") and balanced.train.labels.max() == 46


def test_class_names_come_from_the_mapping_file_when_present(isolated):
    members = emnist_members(splits=("digits",))
    members["gzip/emnist-digits-mapping.txt"] = "".join(f"{i} {ord('A') + i}\n" for i in range(10)).encode()
    write_zip(isolated / "gzip.zip", members)
    ds = load_dataset("emnist-digits", data_dir=isolated, download=False)
    assert ds.class_names == list("ABCDEFGHIJ")


@pytest.mark.parametrize(
    "mapping, message",
    [
        ("0 48\n1 49\n", "maps labels 0..1; expected 10 classes"),
        ("zero forty-eight\n", "line 1 is not 'label ascii-code'"),
    ],
)
def test_a_bad_mapping_file_is_refused(isolated, mapping, message):
    members = emnist_members(splits=("digits",))
    members["gzip/emnist-digits-mapping.txt"] = mapping.encode()
    write_zip(isolated / "gzip.zip", members)
    with pytest.raises(DataFormatError, match=message):
        load_dataset("emnist-digits", data_dir=isolated, download=False)


def test_missing_split_corrupt_zip_and_absent_data_are_one_line_errors(isolated):
    write_zip(isolated / "a" / "gzip.zip", emnist_members(splits=("letters",)))
    with pytest.raises(DataFormatError, match=r"lacks gzip/emnist-digits-train-images-idx3-ubyte.gz"):
        load_dataset("emnist-digits", data_dir=isolated / "a", download=False)
    (isolated / "b").mkdir()
    (isolated / "b" / "gzip.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataFormatError, match="corrupt or unreadable zip archive"):
        load_dataset("emnist-letters", data_dir=isolated / "b", download=False)
    with pytest.raises(DatasetNotFoundError, match="mnistkit data fetch emnist-letters"):
        load_dataset("emnist-letters", data_dir=isolated / "nothing", download=False)


class ZipHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.files.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def zip_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ZipHandler)
    httpd.files = {}
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.timeout(30)
def test_download_verifies_the_archive_before_using_it(isolated, zip_server, monkeypatch):
    url, httpd = zip_server
    monkeypatch.setenv("MNISTKIT_MIRRORS", url)
    good = write_zip(isolated / "src" / "gzip.zip", emnist_members()).read_bytes()
    httpd.files["gzip.zip"] = good[: len(good) // 2] + bytes(len(good) - len(good) // 2)  # right size, garbage
    dest = isolated / "dl"
    with pytest.raises(DatasetNotFoundError, match="download of gzip.zip failed: .*not a readable zip"):
        load_dataset("emnist-letters", data_dir=dest)
    assert not (dest / "EMNIST" / "raw" / "gzip.zip").exists()
    assert list((dest / "EMNIST" / "raw").iterdir()) == []  # no temporary left either
    httpd.files["gzip.zip"] = good
    ds = load_dataset("emnist-letters", data_dir=dest)
    assert (dest / "EMNIST" / "raw" / "gzip.zip").read_bytes() == good and len(ds.train) == 94


@pytest.mark.timeout(60)
def test_train_on_emnist_letters(isolated):
    from mnistkit import fit

    write_zip(isolated / "gzip.zip", emnist_members(splits=("letters",), n_train=260, n_test=52))
    result = fit(
        dataset="emnist-letters",
        data_dir=str(isolated),
        download=False,
        model="mlp",
        model_options={"hidden": [16]},
        epochs=1,
        batch_size=26,
        device="cpu",
        log_every=0,
        out=str(isolated / "run"),
        echo=False,
        plots=False,
    )
    ev = result.evaluation
    assert ev.n == 52 and ev.class_names == list("abcdefghijklmnopqrstuvwxyz")
    # letters are stored from 1: each class's 2 test images land in its own row (a = 0), none lost
    assert [sum(row) for row in ev.confusion] == [2] * 26
    saved = json.loads((isolated / "run" / "eval.json").read_text())
    assert saved["accuracy"] == result.test_accuracy == ev.accuracy
    assert 100 * sum(ev.confusion[i][i] for i in range(26)) / 52 == pytest.approx(ev.accuracy, abs=0.01)


def test_every_reader_fault_is_a_mnistkit_error(isolated):
    members = emnist_members(splits=("letters",))
    members["gzip/emnist-letters-test-labels-idx1-ubyte.gz"] = b"\x1f\x8b truncated"
    write_zip(isolated / "gzip.zip", members)
    with pytest.raises(MnistkitError, match="emnist-letters-test-labels-idx1-ubyte.gz"):
        load_dataset("emnist-letters", data_dir=isolated, download=False)
