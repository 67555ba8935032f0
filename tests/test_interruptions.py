"""A stage killed part-way leaves no file that looks complete, and the next run succeeds."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline import safe_io
from pipeline.__main__ import app
from pipeline.backends.loading import load_module
from pipeline.data.fetch import fetch_dataset
from pipeline.data.published import DataFile, Dataset
from tests.conftest import ROOT, CliRunner, tiny_params, write_params

STALL_SECONDS = 20  # the stalled server gives up by itself, so no test can hang on it


def start(args, cwd) -> subprocess.Popen:
    """`args` in a child whose Ctrl-C is Python's KeyboardInterrupt, even where this run ignores SIGINT (as a shell
    does for a command it starts in the background)."""
    return subprocess.Popen(
        args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


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
    shutil.rmtree(work / "models/trained")  # as DVC removes a stage's outputs before running it
    params = tiny_params(tmp_path / "idx")
    write_params(work / "params.yaml", {**params, "train": {**params["train"], "epochs": 10_000}})
    process = start([sys.executable, "-m", "pipeline", "train"], work)
    wait_for_line(process, "epoch 2 ")
    process.send_signal(sig)
    assert process.wait(timeout=30) != 0
    assert not (work / "models/trained").exists() and leftovers(work) == []
    write_params(work / "params.yaml", params)
    with contextlib.chdir(work):
        assert CliRunner().invoke(app, ["train"]).exit_code == 0
    load_module(work / "models/trained/model.pt")


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
from pipeline.data.published import DataFile, Dataset
from pipeline.data.fetch import fetch_dataset
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


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """A folder's files and their bytes; None where it does not exist."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())} if folder.is_dir() else None


def kill_at_step(kill_at: int) -> None:
    """From now on, SIGKILL this process at its `kill_at`-th file operation of the kinds a swap makes: exchange,
    rename, unlink, rmdir (the last two delete the old folder after the swap)."""
    steps = []

    def killing(operation):
        def step(*args, **kwargs):
            steps.append(operation)
            if len(steps) == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return operation(*args, **kwargs)

        return step

    for module, name in ((os, "rename"), (os, "unlink"), (os, "rmdir"), (safe_io, "exchange")):
        setattr(module, name, killing(getattr(module, name)))


# `static`, killed at the `argv[1]`-th file operation from the start of its swap.
KILL_AT_SWAP = """
import sys
import pipeline.safe_io as safe_io
from pipeline.__main__ import app
from tests.test_interruptions import kill_at_step

def swap_in(new, path, swap=safe_io.swap_in):
    kill_at_step(int(sys.argv[1]))
    swap(new, path)

safe_io.swap_in = swap_in
app(["static"])
"""


def test_a_stage_killed_at_each_step_of_the_swap_leaves_the_old_folder_or_the_new(trained, tmp_path):
    """Kill `static` just before the exchange and just after it: the folder is the old one, then the new one,
    whole; what the kill left beside it, the next run's `recover` tidies. (A kill at every later step, while the
    old folder is deleted, is the next test's.)"""
    work = shutil.copytree(trained, tmp_path / "work")
    folder = work / "models/int8_static"
    old = snapshot(folder)
    write_params(work / "params.yaml", tiny_params(tmp_path / "idx", **{"static.observer": "histogram"}))
    seen = []
    for kill_at in (1, 2):
        command = [sys.executable, "-c", KILL_AT_SWAP, str(kill_at)]
        process = subprocess.run(command, cwd=work, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert process.returncode == -signal.SIGKILL, process.stderr.decode()
        seen.append(snapshot(folder))
        safe_io.recover(folder)
        assert leftovers(work) == [] and not list(folder.parent.glob(".*.old-*"))
        shutil.rmtree(folder)
        shutil.copytree(trained / "models/int8_static", folder)  # the old folder again, for the next kill
    new = seen[1]
    assert new != old and seen == [old, new]
    assert sorted(new) == sorted(old) == ["model.json", "model.onnx", "model.pt", "model.ts"]


def swap_killed_at(kill_at: int, new: Path, path: Path) -> bool:
    """`swap_in(new, path)` in a child process killed at its `kill_at`-th file operation (exchange, rename,
    unlink, rmdir); the last of them delete the old folder, as atomic_dir does after the swap. Whether the kill
    came before the end."""
    child = os.fork()
    if child == 0:
        kill_at_step(kill_at)
        safe_io.swap_in(new, path)
        shutil.rmtree(new)
        os._exit(0)
    return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == -signal.SIGKILL


@pytest.mark.parametrize("one_step", [True, False], ids=["exchange", "rename aside"])
def test_a_swap_killed_at_any_step_is_recovered_whole(tmp_path, monkeypatch, one_step):
    """Every step of the swap, on the path this system takes (one exchange) and on the one for file systems
    without it (rename the old aside, the new in): after the kill, the next writer's `recover` leaves the old
    folder or the new one, whole, and nothing beside it."""
    if not one_step:
        monkeypatch.setattr(safe_io, "exchange", lambda first, second: False)
    old, new = {f"{name}": b"old " + name.encode() for name in "abc"}, {"a": b"new a", "d": b"new d"}
    outcomes, killed = [], True
    for kill_at in range(1, 20):
        path, incoming = tmp_path / str(kill_at) / "model", tmp_path / str(kill_at) / ".model.partial-1"
        for folder, files in ((path, old), (incoming, new)):
            folder.mkdir(parents=True)
            for name, data in files.items():
                (folder / name).write_bytes(data)
        killed = swap_killed_at(kill_at, incoming, path)
        if not killed:
            break  # the swap and the deletion ran to the end before step `kill_at`
        safe_io.recover(path)
        assert snapshot(path) in (old, new), f"killed at step {kill_at}"
        assert sorted(item.name for item in path.parent.iterdir()) == ["model"]
        outcomes.append("old" if snapshot(path) == old else "new")
    assert not killed and snapshot(path) == new
    # Steps: the exchange, or its refusal and 3 renames (the path is missing between the first two); then deleting
    # the old folder's 3 files and itself.
    assert outcomes == (["old"] + ["new"] * 4 if one_step else ["old"] * 3 + ["new"] * 5)
