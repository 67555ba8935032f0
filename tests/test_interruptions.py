"""A stage killed part-way leaves no file that looks complete, and the next run succeeds."""

import contextlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.__main__ import app
from pipeline.checkpoints import load_model
from pipeline.datasets import DataFile, Dataset
from pipeline.stages.download import fetch_dataset
from tests.conftest import CliRunner, tiny_params, write_params

STALL_SECONDS = 20  # the stalled server gives up by itself, so no test can hang on it


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_line(process: subprocess.Popen, text: str) -> None:
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"the process ended before printing {text!r}")


def leftovers(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob(".*.partial-*")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_train_interrupted_then_rerun(trained, tmp_path, sig):
    work = shutil.copytree(trained, tmp_path / "work")
    shutil.rmtree(work / "models/fp32")  # as DVC removes a stage's outputs before running it
    params = tiny_params(tmp_path / "idx")
    write_params(work / "params.yaml", {**params, "train": {**params["train"], "epochs": 10_000}})
    process = start([sys.executable, "-m", "pipeline", "train"], work)
    wait_for_line(process, "epoch 2 ")
    process.send_signal(sig)
    assert process.wait(timeout=30) != 0
    assert not (work / "models/fp32").exists() and leftovers(work) == []
    write_params(work / "params.yaml", params)
    with contextlib.chdir(work):
        assert CliRunner().invoke(app, ["train"]).exit_code == 0
    load_model(work / "models/fp32/model.pt")


class StallingHandler(BaseHTTPRequestHandler):
    """Sends the first kilobyte of a larger file, then stalls: a download caught in the middle."""

    size = 100_000
    started = threading.Event()

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", str(self.size))
        self.end_headers()

    def do_GET(self):
        self.do_HEAD()
        self.wfile.write(b"\x1f\x8b" + b"\0" * 1022)
        self.wfile.flush()
        self.started.set()
        time.sleep(STALL_SECONDS)

    def log_message(self, *args):
        pass


@pytest.fixture
def stalling_mirror():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StallingHandler)
    server.daemon_threads, server.block_on_close = True, False  # never wait for the stalled handler
    threading.Thread(target=server.serve_forever, daemon=True).start()
    StallingHandler.started.clear()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


FETCH = """
import sys
from pathlib import Path
from pipeline.datasets import DataFile, Dataset
from pipeline.stages.download import fetch_dataset
dataset = Dataset("s", (DataFile("train-images-idx3-ubyte.gz", "0" * 32),), (sys.argv[1],))
fetch_dataset(dataset, Path(sys.argv[2]), None, False)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_download_interrupted_then_rerun(stalling_mirror, mirror, raw_dir, tmp_path, sig):
    out = tmp_path / "raw"
    process = start([sys.executable, "-c", FETCH, stalling_mirror, str(out)], tmp_path)
    assert StallingHandler.started.wait(timeout=60)
    time.sleep(0.5)  # let the first kilobyte reach the file
    process.send_signal(sig)
    assert process.wait(timeout=30) != 0
    assert not (out / "train-images-idx3-ubyte.gz").exists()
    if sig == signal.SIGINT:
        assert leftovers(out) == []
    # The next run, from a mirror that works, succeeds and sweeps away what a SIGKILL left.
    fetch_dataset(Dataset("s", (DataFile("train-images-idx3-ubyte.gz", "0" * 32),), (mirror,)), out, None, False)
    assert (out / "train-images-idx3-ubyte.gz").read_bytes() == (raw_dir / "train-images-idx3-ubyte.gz").read_bytes()
    assert leftovers(out) == []
