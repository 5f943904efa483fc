"""Shared directories are trusted only when they are ours and private; `actorhub stop` sweeps
up after sessions whose processes all died.

The tests run as root, so a directory "of another user" is one chowned to another uid here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import actorhub
import actorhub.cluster.launcher as launcher
from actorhub.cluster.session import Session, create_session, make_latest
from actorhub.exceptions import UnsafeDirectoryError
from actorhub.object_store import shm as _shm
from actorhub.object_store.store import NodeObjectStore

OTHER_UID = 4242
CLI = [sys.executable, "-m", "actorhub.cli"]


def actorhub_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def ok(*args: str) -> str:
    result = actorhub_cli(*args)
    assert result.returncode == 0, f"actorhub {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def one_line_error(*args: str) -> str:
    """stderr of a command that must fail with one readable line, not a traceback."""
    result = actorhub_cli(*args)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _segment_dirs(session: Path) -> list[Path]:
    """The /dev/shm directories of a session's nodes (named by the session's last 6 chars)."""
    return sorted(_shm.segment_root().glob(f"actorhub-{session.name[-6:]}-*"))


def _session_processes(session: Path) -> list[int]:
    """Live processes whose command line names the session directory (zombies have none)."""
    needle = os.fsencode(session)
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and needle in Path(f"/proc/{entry}/cmdline").read_bytes():
                found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture(autouse=True)
def no_leaked_segments(session_root: Path) -> Iterator[None]:
    yield
    left = [d for s in session_root.glob("session_*") for d in _segment_dirs(s)]
    for d in left:
        shutil.rmtree(d, ignore_errors=True)
    assert not left, f"left /dev/shm directories behind: {left}"


def _fake_session(root: Path, address: str = "127.0.0.1:1") -> Session:
    """A session directory as a cluster leaves it, with no process behind it."""
    session = create_session(root)
    session.write_hub_address(address)
    return session


# -- the session root ----------------------------------------------------------------------------


def test_an_open_session_root_is_refused_everywhere(session_root: Path) -> None:
    os.chmod(session_root, 0o777)
    try:
        for connect in (lambda: actorhub.init(num_cpus=1), lambda: actorhub.init(address="auto")):
            with pytest.raises(UnsafeDirectoryError) as caught:
                connect()
            message = str(caught.value)
            assert str(session_root) in message and "0777" in message, message
            assert f"chmod 700 {session_root}" in message, message
            assert isinstance(caught.value, PermissionError)
            assert caught.value.path == str(session_root)
        for command in (("start", "--head", "--num-cpus", "1"), ("status",), ("stop",)):
            line = one_line_error(*command)
            assert f"refusing the session root {session_root}" in line, line
        assert not list(session_root.glob("session_*")), "a session was made in an unsafe root"
    finally:
        os.chmod(session_root, 0o700)


def test_a_session_root_owned_by_another_user_is_refused(session_root: Path) -> None:
    os.chown(session_root, OTHER_UID, -1)
    try:
        with pytest.raises(UnsafeDirectoryError, match=f"owned by uid {OTHER_UID}, not by you") as caught:
            actorhub.init(num_cpus=1)
        assert str(session_root) in str(caught.value)
        assert f"owned by uid {OTHER_UID}" in one_line_error("start", "--head")
    finally:
        os.chown(session_root, os.getuid(), -1)


def test_a_session_root_that_is_a_link_of_another_user_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    link = tmp_path / "root"
    link.symlink_to(target)
    os.lchown(link, OTHER_UID, -1)
    with pytest.raises(UnsafeDirectoryError, match="symbolic link"):
        create_session(link)
    nowhere = tmp_path / "nowhere"
    nowhere.symlink_to(tmp_path / "missing")
    os.lchown(nowhere, OTHER_UID, -1)
    with pytest.raises(UnsafeDirectoryError, match="symbolic link"):
        create_session(nowhere)
    assert not (tmp_path / "missing").exists()
    # Our own link to our own private directory is fine (ACTORHUB_SESSION_ROOT may be one).
    os.lchown(link, os.getuid(), -1)
    assert create_session(link).path.parent == link


# -- latest, session directories, the token ------------------------------------------------------


def test_latest_pointing_outside_the_root_is_refused(session_root: Path, tmp_path: Path) -> None:
    elsewhere = _fake_session(tmp_path / "elsewhere")
    (session_root / "latest").symlink_to(elsewhere.path)
    with pytest.raises(UnsafeDirectoryError) as caught:
        actorhub.init(address="auto")
    message = str(caught.value)
    assert f"refusing the link {session_root / 'latest'}" in message and str(elsewhere.path) in message, message
    assert "not at a session directory in" in one_line_error("status")
    # A relative link that climbs out is the same thing.
    (session_root / "latest").unlink()
    (session_root / "latest").symlink_to(f"../elsewhere/{elsewhere.path.name}")
    with pytest.raises(UnsafeDirectoryError):
        actorhub.init(address="auto")


def test_an_open_session_directory_is_refused(session_root: Path) -> None:
    session = _fake_session(session_root)
    make_latest(session)
    os.chmod(session.path, 0o755)
    with pytest.raises(UnsafeDirectoryError, match=re.escape(f"session directory {session.path}: its mode is 0755")):
        actorhub.init(address="auto")
    with pytest.raises(UnsafeDirectoryError):
        actorhub.init(address="127.0.0.1:1")  # found by its address
    # `actorhub stop` names it and leaves it alone.
    result = actorhub_cli("stop")
    assert result.returncode == 0 and f"Skipped: refusing the session directory {session.path}" in result.stderr
    assert session.path.exists()


def test_a_token_file_open_to_others_is_refused(session_root: Path) -> None:
    session = _fake_session(session_root)
    make_latest(session)
    token = session.path / "token"
    os.chmod(token, 0o644)
    for address in ("auto", "127.0.0.1:1"):
        with pytest.raises(UnsafeDirectoryError) as caught:
            actorhub.init(address=address)
        message = str(caught.value)
        assert f"token file {token}: its mode is 0644" in message and f"chmod 600 {token}" in message, message
    os.chmod(token, 0o600)
    os.chown(token, OTHER_UID, -1)
    with pytest.raises(UnsafeDirectoryError, match=f"owned by uid {OTHER_UID}"):
        _ = session.token
    token.unlink()
    token.symlink_to(tmp_token := session_root / "elsewhere-token")
    tmp_token.write_text("x")
    os.chmod(tmp_token, 0o600)
    with pytest.raises(UnsafeDirectoryError, match="symbolic link"):
        _ = session.token


# -- /dev/shm ------------------------------------------------------------------------------------


def test_an_open_or_foreign_shm_directory_is_refused_by_the_store(tmp_path: Path) -> None:
    name = f"test-{os.getpid()}-{time.monotonic_ns()}"
    path = _shm.segment_root() / f"actorhub-{name}"
    path.mkdir(mode=0o700)
    try:
        os.chmod(path, 0o777)
        with pytest.raises(UnsafeDirectoryError, match=re.escape(f"shared-memory directory {path}: its mode is 0777")):
            _shm.segment_dir(name)
        with pytest.raises(UnsafeDirectoryError):
            NodeObjectStore(1 << 20, path, tmp_path / "spill")
        os.chmod(path, 0o700)
        os.chown(path, OTHER_UID, -1)
        with pytest.raises(UnsafeDirectoryError, match=f"owned by uid {OTHER_UID}"):
            _shm.segment_dir(name)
        assert not (path / "arena").exists()
    finally:
        shutil.rmtree(path)


def test_a_precreated_shm_directory_stops_the_cluster_from_starting(
    session_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    node_id = "feedfacefeedface"
    made: list[Path] = []

    def create_and_squat(root: Path) -> Session:
        # What another user would do: make the node's directory first, open to all.
        session = create_session(root)
        squat = _shm.segment_root() / f"actorhub-{session.path.name[-6:]}-{node_id}"
        squat.mkdir()
        os.chmod(squat, 0o777)
        made.append(squat)
        return session

    monkeypatch.setattr(launcher, "new_id", lambda n=16: node_id)
    monkeypatch.setattr(launcher, "create_session", create_and_squat)
    try:
        started = time.monotonic()
        with pytest.raises(UnsafeDirectoryError) as caught:
            actorhub.init(num_cpus=1)
        assert time.monotonic() - started < 5
        assert f"refusing the shared-memory directory {made[0]}: its mode is 0777" in str(caught.value)
        assert not _session_processes(session_root)
        assert not (made[0] / "arena").exists()
    finally:
        for path in made:
            shutil.rmtree(path, ignore_errors=True)


def test_the_node_agent_refuses_a_precreated_shm_directory(session_root: Path) -> None:
    # The launcher checks first; the node agent checks again, when it makes the directory
    # (another user may have made it in between).
    session = create_session(session_root)
    node_id = "0123456789abcdef"
    squat = _shm.segment_root() / f"actorhub-{session.path.name[-6:]}-{node_id}"
    squat.mkdir()
    os.chmod(squat, 0o777)
    try:
        node = subprocess.run(
            [sys.executable, "-m", "actorhub.node", "--session-dir", str(session.path),
             "--hub-address", "127.0.0.1:1", "--node-id", node_id, "--num-cpus", "1"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        assert node.returncode != 0
        assert f"UnsafeDirectoryError: refusing the shared-memory directory {squat}" in node.stderr, node.stderr
        assert not (squat / "arena").exists()
        # Its zygote dies with it (the autouse fixture checks no process is left).
    finally:
        shutil.rmtree(squat, ignore_errors=True)


# -- actorhub stop -------------------------------------------------------------------------------


def _kill_all(session: Path) -> None:
    """SIGKILL every process of the session, the node agents first, so none tidies up."""
    nodes = [int(p.read_text()) for p in session.glob("node-*.pid")]
    for pid in [*nodes, *_session_processes(session)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 15
    while _session_processes(session):  # zombies are left out: they hold no memory
        assert time.monotonic() < deadline, "the cluster's processes did not die"
        time.sleep(0.02)


def test_stop_cleans_a_session_whose_processes_were_all_killed(session_root: Path) -> None:
    out = ok("start", "--head", "--num-cpus", "1")
    match = re.search(r"session dir:\s+(\S+)", out)
    assert match, out
    session = Path(match.group(1))
    try:
        # Hub, node agent, zygote and its prestarted workers.
        deadline = time.monotonic() + 15
        while len(_session_processes(session)) < 4:
            assert time.monotonic() < deadline, _session_processes(session)
            time.sleep(0.05)
        segments = _segment_dirs(session)
        assert len(segments) == 1 and (segments[0] / "arena").exists(), segments
        spill_dirs = list(session.glob("spill-*"))
        assert len(spill_dirs) == 1
        (spill_dirs[0] / "left-over").write_bytes(b"x")
        _kill_all(session)
        assert segments[0].exists()  # nobody tidied up: this is what stop is for

        stopped = ok("stop")
        assert f"Cleaned up session {session}, whose processes are all gone" in stopped, stopped
        assert str(segments[0]) in stopped and "1 spill file(s)" in stopped, stopped
        assert not segments[0].exists() and not spill_dirs[0].exists()
        assert session.exists()  # the logs stay
        assert ok("stop").strip() == "No running cluster."
    finally:
        actorhub_cli("stop")
        _kill_all(session)


def test_stop_leaves_directories_that_are_not_ours_alone(session_root: Path) -> None:
    session = _fake_session(session_root)
    ours = _shm.segment_root() / f"actorhub-{session.path.name[-6:]}-0000000000000001"
    theirs = _shm.segment_root() / f"actorhub-{session.path.name[-6:]}-0000000000000002"
    open_one = _shm.segment_root() / f"actorhub-{session.path.name[-6:]}-0000000000000003"
    try:
        for path in (ours, theirs, open_one):
            path.mkdir(mode=0o700)
        os.chown(theirs, OTHER_UID, -1)
        os.chmod(open_one, 0o777)
        stopped = ok("stop")
        assert str(ours) in stopped and str(theirs) not in stopped and str(open_one) not in stopped, stopped
        assert not ours.exists() and theirs.exists() and open_one.exists()
    finally:
        for path in (ours, theirs, open_one):
            shutil.rmtree(path, ignore_errors=True)
