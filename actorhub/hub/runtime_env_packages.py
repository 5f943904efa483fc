"""The hub's store of runtime_env packages (the `RuntimeEnvPackages` service).

A package is a zip archive named by the hash of its bytes (`runtime_env/packaging.py`), kept as
one file in a directory beside the hub's control store, so a hub restarted by its supervisor
(same store) still has every package its actors may need to restart. Writes go to a temporary
file renamed into place: a package is there whole or not at all. File I/O runs on the default
executor, never on the hub's loop: a package may be hundreds of MiB.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Any

import grpc

from actorhub._proto.v1 import common_pb2, runtime_env_pb2, runtime_env_pb2_grpc
from actorhub.runtime_env.packaging import digest_of, matches_content
from actorhub.wire.server import abort

Context = grpc.aio.ServicerContext[Any, Any]


class RuntimeEnvPackagesServicer(runtime_env_pb2_grpc.RuntimeEnvPackagesServicer):
    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _path(self, uri: str) -> Path:
        return self._directory / f"{digest_of(uri)}.zip"

    async def _checked_path(self, uri: str, context: Context) -> Path:
        try:
            return self._path(uri)
        except ValueError as e:
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(e))

    async def RuntimeEnvPackageExists(
        self, request: runtime_env_pb2.RuntimeEnvPackageRef, context: Context,
    ) -> runtime_env_pb2.RuntimeEnvPackageFound:
        path = await self._checked_path(request.uri, context)
        return runtime_env_pb2.RuntimeEnvPackageFound(found=path.is_file())

    async def RuntimeEnvPackageUpload(
        self, request: runtime_env_pb2.RuntimeEnvPackage, context: Context,
    ) -> common_pb2.Empty:
        path = await self._checked_path(request.uri, context)
        if not matches_content(request.uri, request.data):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                        f"the package's bytes do not match the hash of its URI {request.uri}")
        if not path.is_file():
            await asyncio.get_running_loop().run_in_executor(None, _write_whole, path, request.data)
        return common_pb2.Empty()

    async def RuntimeEnvPackageFetch(
        self, request: runtime_env_pb2.RuntimeEnvPackageRef, context: Context,
    ) -> runtime_env_pb2.RuntimeEnvPackage:
        path = await self._checked_path(request.uri, context)
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, path.read_bytes)
        except FileNotFoundError:
            await abort(context, grpc.StatusCode.NOT_FOUND, f"no runtime_env package {request.uri} on this hub")
        return runtime_env_pb2.RuntimeEnvPackage(uri=request.uri, data=data)


def _write_whole(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, path)  # two uploads of one package write the same bytes
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
