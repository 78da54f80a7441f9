"""Saving and loading where the path is not an ordinary file (issue 11, items 6, 7, 10).

fastnn.save writes a temporary file and renames it over the destination; these tests
check that this never replaces a device, FIFO, socket or directory, writes through
symlinks to their target, respects read-only files, and that fastnn.load refuses
non-regular files without opening them (a FIFO would block forever) and reads the
size of the file it opened (a concurrent save must never make a load fail).
"""

from __future__ import annotations

import os
import socket
import stat
import sys
import threading

import numpy as np
import pytest

import fastnn
from _reliability_record import record_module_once_passed
from fastnn import MLP, ModelFileError

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")


def _net(sizes=(3, 4, 2), seed=0):
    return MLP(list(sizes), backend="numpy", random_state=seed)


def _same(a, b):
    return (
        a.layer_sizes == b.layer_sizes
        and a.params.dtype == b.params.dtype
        and np.array_equal(a.params.view(np.uint8), b.params.view(np.uint8))
    )


def _leftovers(*dirs):
    """Temporary files a save left behind."""
    return [n for d in dirs for n in os.listdir(d) if n.endswith(".tmp")]


# --- save: destinations that must not be replaced ---------------------------------------------


def _fifo(path):
    os.mkfifo(path)
    return stat.S_ISFIFO


def _directory(path):
    os.mkdir(path)
    return stat.S_ISDIR


def _socket(path):
    s = socket.socket(socket.AF_UNIX)
    s.bind(os.path.basename(path))  # relative (cwd is its directory): short enough
    _SOCKETS.append(s)
    return stat.S_ISSOCK


def _link_to_fifo(path):
    os.mkfifo(path + ".target")
    os.symlink(os.path.basename(path) + ".target", path)
    return stat.S_ISFIFO


def _link_to_directory(path):
    os.mkdir(path + ".target")
    os.symlink(path + ".target", path)
    return stat.S_ISDIR


_SOCKETS: list = []
# (name, make the thing at a path and return the stat test it must still pass, error)
REFUSED_DESTINATIONS = [
    ("fifo", _fifo, "FIFO"),
    ("directory", _directory, "directory"),
    ("socket", _socket, "socket"),
    ("symlink to a fifo", _link_to_fifo, "FIFO"),
    ("symlink to a directory", _link_to_directory, "directory"),
]


@pytest.mark.parametrize(
    "name, make, what", REFUSED_DESTINATIONS, ids=[c[0] for c in REFUSED_DESTINATIONS]
)
def test_save_refuses_special_files_and_leaves_them_alone(tmp_path, monkeypatch, name, make, what):
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "dest")
    still = make(path)
    try:
        with pytest.raises(OSError, match=what) as info:
            fastnn.save(_net(), path)
        assert str(info.value).startswith(path)
        assert still(os.stat(path).st_mode)  # not replaced by a regular file
        assert _leftovers(tmp_path) == []
    finally:
        while _SOCKETS:
            _SOCKETS.pop().close()


def test_save_refuses_dev_null_and_leaves_it_a_device(tmp_path):
    # Tried only once a FIFO is refused: a regression here as root would turn the
    # machine's /dev/null into a regular file.
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("/dev/null is not a character device here")
    fifo = tmp_path / "canary"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="FIFO"):  # else do not try the device
        fastnn.save(_net(), fifo)
    with pytest.raises(OSError, match="character device"):
        fastnn.save(_net(), "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# --- save: symlinks are written through, atomically -------------------------------------------


def _relative_link(d):
    os.symlink("target.fnn", d / "link.fnn")
    return d / "link.fnn", d / "target.fnn"


def _absolute_link_elsewhere(d):
    (d / "other").mkdir()
    os.symlink(d / "other" / "target.fnn", d / "link.fnn")
    return d / "link.fnn", d / "other" / "target.fnn"


def _chain_of_links(d):
    os.symlink("target.fnn", d / "b.fnn")
    os.symlink("b.fnn", d / "link.fnn")
    return d / "link.fnn", d / "target.fnn"


def _link_through_linked_directory(d):
    (d / "real").mkdir()
    os.symlink("real", d / "dir")
    return d / "dir" / "target.fnn", d / "real" / "target.fnn"


LINKS = [
    ("relative", _relative_link),
    ("absolute, other directory", _absolute_link_elsewhere),
    ("chain of two", _chain_of_links),
    ("linked directory", _link_through_linked_directory),
]


@pytest.mark.parametrize("existing", [True, False], ids=["target exists", "dangling"])
@pytest.mark.parametrize("name, make", LINKS, ids=[c[0] for c in LINKS])
def test_save_writes_through_symlinks_to_their_target(tmp_path, name, make, existing):
    link, target = make(tmp_path)
    if existing:
        fastnn.save(_net(seed=0), target)
    new = _net((3, 8, 2), seed=1)
    fastnn.save(new, link)
    assert _same(fastnn.load(target), new)  # the target holds the new model
    assert _same(fastnn.load(link), new)
    if name != "linked directory":  # there the link is a directory of the path
        assert os.path.islink(link)  # still a link, not replaced by a file
    if name == "chain of two":
        assert os.path.islink(tmp_path / "b.fnn")
    assert _leftovers(tmp_path, target.parent) == []


# --- save: read-only destinations --------------------------------------------------------------

READ_ONLY = [(0o444, False), (0o400, False), (0o555, False), (0o444, True)]


@pytest.mark.parametrize(
    "mode, via_link",
    READ_ONLY,
    ids=[f"{m:o}{' via link' if link else ''}" for m, link in READ_ONLY],
)
def test_save_refuses_a_read_only_file(tmp_path, mode, via_link):
    target = tmp_path / "m.fnn"
    fastnn.save(_net(), target)
    before = target.read_bytes()
    os.chmod(target, mode)
    path = target
    if via_link:
        os.symlink("m.fnn", tmp_path / "link.fnn")
        path = tmp_path / "link.fnn"
    # Tests run as root, who could write the file: the mode bits decide, as for a
    # user without write permission.
    with pytest.raises(PermissionError, match="read-only") as info:
        fastnn.save(_net((3, 8, 2), seed=1), path)
    assert str(info.value).startswith(str(path))
    assert target.read_bytes() == before
    assert stat.S_IMODE(os.stat(target).st_mode) == mode
    assert _leftovers(tmp_path) == []


def test_save_into_a_missing_directory_names_it(tmp_path):
    path = tmp_path / "missing" / "m.fnn"
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        fastnn.save(_net(), path)
    assert str(info.value).startswith(str(path))


# --- save: the temporary file's name ---------------------------------------------------------


@pytest.mark.parametrize("length", [200, 250, 254, 255])
def test_save_to_the_longest_legal_file_names(tmp_path, length):
    path = tmp_path / ("m" * length)
    net = _net()
    fastnn.save(net, path)
    assert _same(fastnn.load(path), net)
    assert os.listdir(tmp_path) == [path.name]


# --- load: non-regular files are refused without blocking -----------------------------------


def _load_in_thread(path):
    """fastnn.load(path) in a thread: (finished, exception); a FIFO that blocks the
    loader is opened for writing afterwards so that the thread can end."""
    result = {}

    def run():
        try:
            fastnn.load(path)
            result["exc"] = None
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["exc"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)  # a generous bound: the fixed loader returns at once
    finished = not t.is_alive()
    if not finished:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # unblock the reader
        os.close(fd)
        t.join(60)
    return finished, result.get("exc")


LOAD_REFUSED = [
    ("fifo", lambda p: os.mkfifo(p), "FIFO"),
    ("directory", lambda p: os.mkdir(p), "directory"),
    ("socket", _socket, "socket"),
    ("symlink to a fifo", _link_to_fifo, "FIFO"),
]


@pytest.mark.parametrize("name, make, what", LOAD_REFUSED, ids=[c[0] for c in LOAD_REFUSED])
def test_load_refuses_special_files_without_blocking(tmp_path, monkeypatch, name, make, what):
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path / "m.fnn")
    make(path)
    try:
        finished, exc = _load_in_thread(path)
    finally:
        while _SOCKETS:
            _SOCKETS.pop().close()
    assert finished, "fastnn.load blocked on a special file"
    assert isinstance(exc, ModelFileError), exc
    assert str(exc).startswith(path) and what in str(exc)


def test_load_refuses_a_character_device():
    if not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("/dev/null is not a character device here")
    with pytest.raises(ModelFileError, match="^/dev/null: is a character device"):
        fastnn.load("/dev/null")


# --- load while another thread saves ---------------------------------------------------------

CONCURRENT_LOADS = 2000


def test_load_while_another_thread_saves(tmp_path, monkeypatch):
    """Every load sees one complete file: the old one or the new one, bit for bit."""
    models = (_net((3, 4, 2), seed=0), _net((3, 32, 32, 2), seed=1))  # two sizes
    path = tmp_path / "m.fnn"
    fastnn.save(models[0], path)
    # Widen the window the old loader lost: its stat of the path and its open are
    # each a walk of these ~1900 "./" components, so a rename often lands between
    # them; fsync off so that the saver renames as often as it can.
    dots = (4000 - len(str(tmp_path))) // 2
    long_path = str(tmp_path) + "/" + "./" * dots + "m.fnn"
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    stop, saves = threading.Event(), [0]
    errors = []

    def saver():
        try:
            while not stop.is_set():
                fastnn.save(models[saves[0] % 2], path)
                saves[0] += 1
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    t = threading.Thread(target=saver, daemon=True)
    t.start()
    seen = [0, 0]
    try:
        for _ in range(CONCURRENT_LOADS):
            loaded = fastnn.load(long_path)
            match = [i for i, m in enumerate(models) if _same(loaded, m)]
            assert match, "a load returned neither of the saved models"
            seen[match[0]] += 1
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old_interval)
    assert not errors, errors
    assert all(seen), seen  # the saver did run meanwhile


def test_special_files_recorded(request):
    saves = len(REFUSED_DESTINATIONS) + 1 + 2 * len(LINKS) + len(READ_ONLY) + 1 + 4
    record_module_once_passed(
        request,
        "files.special_save",
        "special files",
        "fastnn.save to a FIFO, a socket, a directory, /dev/null, symlinks (relative, "
        "absolute, chained, to a directory; target existing or dangling), read-only "
        "files (directly and through a link), a missing directory, 200-255-character "
        "file names",
        saves,
        "special and read-only files refused with an error naming the path and left as "
        "they were (/dev/null stays a device); a symlink's target is replaced "
        "atomically and the link kept; names up to 255 characters saved",
    )
    record_module_once_passed(
        request,
        "files.special_load",
        "special files",
        "fastnn.load of a FIFO, a socket, a directory, a symlink to a FIFO and a character device",
        len(LOAD_REFUSED) + 1,
        "ModelFileError naming the file, without opening it for reading (no hang)",
    )
    record_module_once_passed(
        request,
        "files.concurrent_save_load",
        "concurrent save/load",
        "fastnn.load in a loop while another thread saves two different models in "
        "turn over the same path",
        CONCURRENT_LOADS,
        "every load succeeds and equals one of the two models bit for bit",
    )
