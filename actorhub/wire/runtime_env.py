"""The client of the hub's runtime_env packages (`RuntimeEnvPackages`): drivers upload the
packages of their working_dir and py_modules, node agents fetch them to unpack."""

from __future__ import annotations

from actorhub._proto.v1 import runtime_env_pb2, runtime_env_pb2_grpc
from actorhub.config import RpcDeadlines
from actorhub.exceptions import RpcFailedError
from actorhub.wire.rpc import NOT_FOUND, Client, Peer, check_message_size, unary
from actorhub.wire.transport import ChannelPool


class PackageNotFoundError(LookupError):
    """The hub has no package of that URI."""


class RuntimeEnvPackagesClient(Client[runtime_env_pb2_grpc.RuntimeEnvPackagesStub]):
    def __init__(
        self, channels: ChannelPool, hub_address: str, deadlines: RpcDeadlines, max_message_bytes: int,
    ) -> None:
        super().__init__(channels, Peer("hub", hub_address), deadlines, runtime_env_pb2_grpc.RuntimeEnvPackagesStub)
        self._max_message_bytes = max_message_bytes

    def exists(self, uri: str) -> bool:
        reply: runtime_env_pb2.RuntimeEnvPackageFound = unary(
            self.peer, "RuntimeEnvPackageExists", self._stub().RuntimeEnvPackageExists,
            runtime_env_pb2.RuntimeEnvPackageRef(uri=uri), self.deadlines.control_s,
            retry_unavailable_s=self._retry_s,
        )
        return reply.found

    def upload(self, uri: str, data: bytes, what: str) -> None:
        """Idempotent (the hub keeps one copy per URI), so retried while the hub is unreachable.
        A package over the cluster's message limit raises MessageTooLargeError naming `what`."""
        check_message_size(what, len(data), self._max_message_bytes)
        unary(
            self.peer, "RuntimeEnvPackageUpload", self._stub().RuntimeEnvPackageUpload,
            runtime_env_pb2.RuntimeEnvPackage(uri=uri, data=data), self.deadlines.fetch_s,
            retry_unavailable_s=self._retry_s,
        )

    def fetch(self, uri: str) -> bytes:
        try:
            reply: runtime_env_pb2.RuntimeEnvPackage = unary(
                self.peer, "RuntimeEnvPackageFetch", self._stub().RuntimeEnvPackageFetch,
                runtime_env_pb2.RuntimeEnvPackageRef(uri=uri), self.deadlines.fetch_s,
                retry_unavailable_s=self._retry_s,
            )
        except RpcFailedError as e:
            if e.code == NOT_FOUND:
                raise PackageNotFoundError(f"the hub has no runtime_env package {uri}") from None
            raise
        return reply.data
