"""The official source without a network: a small archive in the official python format, served from a loopback
HTTP server at a URL the tests set, is downloaded, md5-checked and extracted all or nothing; and a batch file is
read without running anything it names."""
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest

import resnet.data
from resnet import load_cifar10
from resnet.data import OFFICIAL_BATCHES, OFFICIAL_DIR, DataError

from .conftest import random_images, write_official


def official_archive(tmp_path) -> bytes:
    """A .tar.gz laid out as cifar-10-python.tar.gz, of 20 training and 10 test images."""
    folder = write_official(tmp_path / OFFICIAL_DIR)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in OFFICIAL_BATCHES:
            tar.add(folder / name, f"{OFFICIAL_DIR}/{name}")
    return buf.getvalue()


@pytest.fixture
def server(monkeypatch, isolated_cache):
    """A loopback server whose body and declared length the test sets; OFFICIAL_URL points at it."""
    served = {"body": b"", "length": None, "requests": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            served["requests"] += 1
            self.send_response(200)
            self.send_header("Content-Length", str(served["length"] or len(served["body"])))
            self.end_headers()
            self.wfile.write(served["body"])  # fewer bytes than declared: the connection closes mid-download

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setattr(resnet.data, "OFFICIAL_URL", f"http://127.0.0.1:{httpd.server_port}/cifar-10-python.tar.gz")
    yield served
    httpd.shutdown()
    httpd.server_close()


def served_archive(server, tmp_path, monkeypatch, md5=None):
    server["body"] = official_archive(tmp_path)
    monkeypatch.setattr(resnet.data, "OFFICIAL_MD5", md5 or hashlib.md5(server["body"]).hexdigest())


def test_the_official_archive_is_downloaded_checked_and_extracted_once(server, tmp_path, monkeypatch, isolated_cache):
    served_archive(server, tmp_path, monkeypatch)
    ds = load_cifar10("official")
    assert ds.source == "official" and np.array_equal(ds.train_x, random_images(20))
    assert np.array_equal(ds.test_x, random_images(10, seed=1)) and ds.train_y.tolist() == np.repeat(np.arange(10), 2).tolist()
    assert sorted(p.name for p in (isolated_cache / OFFICIAL_DIR).iterdir()) == sorted(OFFICIAL_BATCHES)
    assert load_cifar10("official").checksum == ds.checksum and server["requests"] == 1  # the cache serves it now


def nothing_left(cache):
    """The cache holds no batches folder and no download in progress."""
    return not cache.exists() or [p.name for p in cache.iterdir()] == []


def test_a_download_of_another_md5_is_refused_and_nothing_is_kept(server, tmp_path, monkeypatch, isolated_cache):
    served_archive(server, tmp_path, monkeypatch, md5="0" * 32)
    with pytest.raises(DataError, match=f"md5 {hashlib.md5(server['body']).hexdigest()}, not the official 0{{32}}"):
        load_cifar10("official")
    assert nothing_left(isolated_cache)


def test_a_download_cut_short_is_refused_and_nothing_is_kept(server, tmp_path, monkeypatch, isolated_cache):
    served_archive(server, tmp_path, monkeypatch)
    server["length"], server["body"] = len(server["body"]), server["body"][:1000]
    with pytest.raises(DataError, match="could not download official CIFAR-10 from http://127.0.0.1:.* \\(ConnectionError: cut short at 1,000 of"):
        load_cifar10("official")
    assert nothing_left(isolated_cache)


def test_no_network_says_what_to_do_in_one_line(monkeypatch, isolated_cache):
    monkeypatch.setattr(resnet.data, "OFFICIAL_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens
    with pytest.raises(DataError) as e:
        load_cifar10("official")
    assert "\n" not in str(e.value) and "pass --data PATH" in str(e.value) and nothing_left(isolated_cache)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("echo ran > pwned",))


def test_a_crafted_batch_file_runs_no_code(tmp_path, isolated_cache, monkeypatch):
    folder = write_official(tmp_path / OFFICIAL_DIR)
    (folder / "data_batch_3").write_bytes(pickle.dumps({b"data": _Boom(), b"labels": [0]}))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="corrupt CIFAR-10 batch .*data_batch_3: posix.system is not part of a CIFAR-10 batch"):
        load_cifar10(str(folder))
    assert not (tmp_path / "pwned").exists()
