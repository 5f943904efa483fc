"""Packages: a working_dir or py_modules entry as one zip archive named by its content.

Archives are made reproducibly (entries sorted, fixed timestamps, fixed compression), so the
same files give the same bytes and so the same URI: a package is uploaded once per distinct
content, however many drivers, actors and tasks name the directory. A working_dir's files sit
at the archive's root (it becomes the worker's cwd); a py_modules entry keeps its own name (a
package directory `mylib/` or a file `util.py`), so its unpacked root goes on sys.path.

`excludes` takes gitignore-like patterns: `name` matches a file or directory of that name
anywhere, a pattern with a slash matches the path from the root (`/` first anchors it), and
`*`, `?` and `[...]` match as in fnmatch. `.git` and `__pycache__` are always left out.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath

from actorhub.runtime_env.spec import PACKAGE_SCHEME

# Ray's bound on one package; the cluster's message limit may be lower (checked at the upload).
MAX_PACKAGE_BYTES = 500 * 1024 * 1024
ALWAYS_EXCLUDED = (".git", "__pycache__")
_URI_PREFIX = f"{PACKAGE_SCHEME}_actorhub_pkg_"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class Package:
    uri: str
    data: bytes


class PackageTooLargeError(ValueError):
    """A directory over MAX_PACKAGE_BYTES (before compression)."""


def uri_for(data: bytes) -> str:
    return f"{_URI_PREFIX}{hashlib.sha256(data).hexdigest()}.zip"


def digest_of(uri: str) -> str:
    """The content hash a package URI names; ValueError for anything else."""
    digest = uri.removeprefix(_URI_PREFIX).removesuffix(".zip")
    if not uri.startswith(_URI_PREFIX) or not uri.endswith(".zip") or len(digest) != 64 or not all(
        c in "0123456789abcdef" for c in digest
    ):
        raise ValueError(f"not a runtime_env package URI: {uri!r}")
    return digest


def matches_content(uri: str, data: bytes) -> bool:
    return hashlib.sha256(data).hexdigest() == digest_of(uri)


def working_dir_package(directory: str, excludes: tuple[str, ...]) -> Package:
    """The files under `directory`, at the archive's root."""
    return _archive(_walk(Path(directory), excludes, PurePosixPath()), f"working_dir {directory!r}")


def module_package(path: str, excludes: tuple[str, ...]) -> Package:
    """A py_modules entry under its own name: a directory's files below `name/`, or one file."""
    source = Path(path)
    if source.is_file():
        return _archive([(source, PurePosixPath(source.name))], f"py_modules entry {path!r}")
    return _archive(_walk(source, excludes, PurePosixPath(source.name)), f"py_modules entry {path!r}")


def _excluded(relative: PurePosixPath, patterns: tuple[str, ...]) -> bool:
    if any(part in ALWAYS_EXCLUDED for part in relative.parts):
        return True
    for pattern in patterns:
        bare = pattern.strip("/")
        if not bare:
            continue
        if pattern.startswith("/") or "/" in bare:
            # From the root: the path itself, or anything below a matching directory.
            depth = len(PurePosixPath(bare).parts)
            if fnmatchcase("/".join(relative.parts[:depth]), bare):
                return True
        elif any(fnmatchcase(part, bare) for part in relative.parts):
            return True
    return False


def _walk(root: Path, excludes: tuple[str, ...], prefix: PurePosixPath) -> list[tuple[Path, PurePosixPath]]:
    """(file, name in the archive) for every file under `root` not excluded, in a fixed order."""
    found: list[tuple[Path, PurePosixPath]] = []
    for folder, dirs, files in os.walk(root):
        here = PurePosixPath(Path(folder).relative_to(root).as_posix())
        dirs[:] = sorted(d for d in dirs if not _excluded(_child(here, d), excludes))
        for name in sorted(files):
            relative = _child(here, name)
            if not _excluded(relative, excludes):
                found.append((Path(folder) / name, prefix / relative))
    return found


def _child(here: PurePosixPath, name: str) -> PurePosixPath:
    return PurePosixPath(name) if here == PurePosixPath(".") else here / name


def _archive(files: list[tuple[Path, PurePosixPath]], what: str) -> Package:
    total = sum(path.stat().st_size for path, _ in files)
    if total > MAX_PACKAGE_BYTES:
        raise PackageTooLargeError(
            f"{what} holds {total / 2**20:.1f} MiB, over the {MAX_PACKAGE_BYTES // 2**20} MiB a runtime_env "
            "package may hold; leave large files out with excludes=[...]"
        )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
        for path, name in sorted(files, key=lambda item: item[1].as_posix()):
            info = zipfile.ZipInfo(name.as_posix(), _ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            # Only the permission bits: an executable script stays executable where it lands.
            info.external_attr = (stat.S_IFREG | (path.stat().st_mode & 0o777)) << 16
            archive.writestr(info, path.read_bytes())
    data = buffer.getvalue()
    return Package(uri_for(data), data)


def unpack(data: bytes, target: Path) -> None:
    """Extract an archive into `target` (which must not exist yet), refusing entries that would
    land outside it."""
    target.mkdir(parents=True)
    root = target.resolve()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            destination = (root / info.filename).resolve()
            if destination != root and root not in destination.parents:
                raise ValueError(f"the package entry {info.filename!r} points outside its directory")
            archive.extract(info, root)
            mode = (info.external_attr >> 16) & 0o777
            if mode and not info.is_dir():
                destination.chmod(mode)


def package_for(what: str, path: str, excludes: tuple[str, ...]) -> Package:
    """The package of a runtime_env's `working_dir` (`what`) or of one of its `py_modules`."""
    if what == "working_dir":
        return working_dir_package(path, excludes)
    return module_package(path, excludes)
