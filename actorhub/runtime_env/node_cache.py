"""A node's runtime_env cache: packages unpacked once, pip environments built once.

Everything lives under `<session>/runtime_env/`: `packages/<sha256>/` holds an unpacked
package (the worker's cwd for a working_dir, a sys.path entry for a py_modules entry), and
`pip/<key>/` a virtual environment per distinct set of requirements (`RuntimeEnvSpec.pip_key`).

A pip environment inherits the node agent's interpreter: it is made with `venv --without-pip`,
and a `.pth` file in its site-packages adds the base environment's site-packages *after* its
own (with `site.addsitedir`, so the base's own .pth files, an editable install's included,
still apply). So actorhub and its dependencies are not reinstalled, pip (the base's, run by the
environment's interpreter) installs only what is missing into the environment, and what it
installs shadows the base's versions.

Preparation is single-flight: concurrent StartActors of one env on this node wait for one
fetch, unpack or install (an in-flight future per package and per pip env, on the node agent's
loop), and a file lock serialises node agents that share a session directory on one host.
Packages are unpacked into a temporary directory renamed into place, and a pip environment
counts only once its ready marker is written, so a crash never leaves half an env in use. A
failed install is removed, not cached: the next actor of that env tries again.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import site
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from actorhub.exceptions import RuntimeEnvSetupError
from actorhub.runtime_env.packaging import digest_of, matches_content, unpack
from actorhub.runtime_env.spec import RuntimeEnvSpec

PIP_TIMEOUT_S = 900.0
_PIP_ERROR_LINES = 20
_READY = ".actorhub-ready"


def cache_root(session_dir: Path) -> Path:
    return session_dir / "runtime_env"


def package_dir(session_dir: Path, uri: str) -> Path:
    """Where the package `uri` is unpacked on this host (the worker's view is the same path)."""
    return cache_root(session_dir) / "packages" / digest_of(uri)


def venv_dir(session_dir: Path, pip_key: str) -> Path:
    return cache_root(session_dir) / "pip" / pip_key


def venv_python(session_dir: Path, pip_key: str) -> Path:
    return venv_dir(session_dir, pip_key) / "bin" / "python"


class RuntimeEnvCache:
    """Used on the node agent's event loop; blocking work runs on its default executor."""

    def __init__(self, session_dir: Path, logs_dir: Path, node_id: str, fetch: Callable[[str], bytes]) -> None:
        self._session_dir = session_dir
        self._logs_dir = logs_dir
        self._node_id = node_id
        self._fetch = fetch
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._ready: set[tuple[str, str]] = set()

    async def prepare(self, env: RuntimeEnvSpec) -> None:
        """Make every package and the pip environment of `env` ready on this node; raises
        RuntimeEnvSetupError saying what failed (pip's last lines of output for an install)."""
        work = [self._once(("package", uri), partial(self._unpack, uri)) for uri in env.package_uris()]
        if env.pip:
            work.append(self._once(("pip", env.pip_key), partial(self._build_venv, env.pip_key, env.pip)))
        await asyncio.gather(*work)

    async def _once(self, key: tuple[str, str], make: Callable[[], None]) -> None:
        if key in self._ready:
            return
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, self._guarded, make))
            self._inflight[key] = future
            future.add_done_callback(partial(self._settled, key))
        # Shielded: a StartActor that gives up must not cancel the work others wait for.
        await asyncio.shield(future)

    def _settled(self, key: tuple[str, str], future: asyncio.Future[None]) -> None:
        if self._inflight.get(key) is future:
            del self._inflight[key]
        if not future.cancelled() and future.exception() is None:
            self._ready.add(key)

    def _guarded(self, make: Callable[[], None]) -> None:
        try:
            make()
        except RuntimeEnvSetupError:
            raise
        except Exception as e:  # a fetch that failed, a full disk: the caller learns why
            raise RuntimeEnvSetupError(f"the runtime_env could not be set up on node {self._node_id}: {e}") from None

    # -- packages -----------------------------------------------------------------------------
    def _unpack(self, uri: str) -> None:
        target = package_dir(self._session_dir, uri)
        if target.is_dir():
            return
        data = self._fetch(uri)
        if not matches_content(uri, data):
            raise RuntimeEnvSetupError(f"the runtime_env package {uri} fetched from the hub is corrupt")
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = target.parent / f".unpacking-{target.name}-{os.getpid()}-{os.urandom(4).hex()}"
        try:
            unpack(data, staging)
            try:
                staging.rename(target)
            except OSError:
                if not target.is_dir():  # not a concurrent unpack of the same package: a real failure
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    # -- pip environments ---------------------------------------------------------------------
    def _build_venv(self, key: str, requirements: tuple[str, ...]) -> None:
        directory = venv_dir(self._session_dir, key)
        ready = directory / _READY
        if ready.exists():
            return
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(directory.parent / f"{key}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another node agent on this host may be building it
            if ready.exists():
                return
            shutil.rmtree(directory, ignore_errors=True)  # what a crashed build left
            try:
                self._install(directory, requirements)
            except BaseException:
                shutil.rmtree(directory, ignore_errors=True)
                raise
            ready.touch()

    def _install(self, directory: Path, requirements: tuple[str, ...]) -> None:
        log_path = self._logs_dir / f"runtime_env-pip-{directory.name}.log"
        with open(log_path, "ab") as log:
            log.write(f"== node {self._node_id}: pip install {' '.join(requirements)}\n".encode())
            log.flush()
            made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)],
                                  stdout=log, stderr=subprocess.PIPE, timeout=PIP_TIMEOUT_S)
            if made.returncode != 0:
                raise RuntimeEnvSetupError(
                    f"creating the virtual environment {directory} failed on node {self._node_id}:\n"
                    + _last_lines(made.stderr))
            _overlay_base(directory)
            requirements_file = directory / "requirements.txt"
            requirements_file.write_text("".join(f"{line}\n" for line in requirements))
            python = directory / "bin" / "python"
            command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                       "-r", str(requirements_file)]
            try:
                done = subprocess.run(command, stdout=log, stderr=subprocess.PIPE, timeout=PIP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise RuntimeEnvSetupError(
                    f"pip install {' '.join(requirements)} took over {PIP_TIMEOUT_S:g} s on node "
                    f"{self._node_id}; see {log_path}") from None
            log.write(done.stderr)
        if done.returncode != 0:
            raise RuntimeEnvSetupError(
                f"pip install {' '.join(requirements)} failed on node {self._node_id} (exit code "
                f"{done.returncode}; the whole log is {log_path}):\n{_last_lines(done.stderr)}")


def _overlay_base(directory: Path) -> None:
    """The .pth that puts this interpreter's site-packages after the environment's own."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = directory / "lib" / version / "site-packages"
    base = [path for path in site.getsitepackages() if os.path.isdir(path)]
    lines = "".join(f"import site; site.addsitedir({path!r})\n" for path in base)
    (site_packages / "_actorhub_base.pth").write_text(lines)


def _last_lines(output: bytes) -> str:
    lines = output.decode(errors="replace").rstrip().splitlines()
    return "\n".join(lines[-_PIP_ERROR_LINES:])

