"""Every public name of Ray's `ray.exceptions` exists in `actorhub.exceptions`, with Ray's bases.

The list below is written out by hand from Ray 2.x's `ray.exceptions` (the documented API and the
module's other public classes), so a rename or a changed base is a visible diff here.
"""

from __future__ import annotations

import pickle

import pytest

import actorhub.exceptions as ex

# name -> the Ray names (or Python builtins) it must be a subclass of, as in Ray.
RAY_EXCEPTIONS: dict[str, tuple[str, ...]] = {
    "RayError": (),
    "CrossLanguageError": ("RayError",),
    "TaskCancelledError": ("RayError",),
    "RayTaskError": ("RayError",),
    "LocalRayletDiedError": ("RayError",),
    "WorkerCrashedError": ("RayError",),
    "RayActorError": ("RayError",),
    "ActorDiedError": ("RayActorError",),
    "ActorUnavailableError": ("RayActorError",),
    "RaySystemError": ("RayError",),
    "UserCodeException": ("RayError",),
    "ObjectStoreFullError": ("RayError",),
    "OutOfDiskError": ("RayError",),
    "OutOfMemoryError": ("RayError",),
    "NodeDiedError": ("RayError",),
    "ObjectLostError": ("RayError",),
    "ObjectFetchTimedOutError": ("ObjectLostError",),
    "RpcError": ("RayError",),
    "ReferenceCountingAssertionError": ("ObjectLostError", "AssertionError"),
    "ObjectFreedError": ("ObjectLostError",),
    "OwnerDiedError": ("ObjectLostError",),
    "ObjectReconstructionFailedError": ("ObjectLostError",),
    "ObjectReconstructionFailedMaxAttemptsExceededError": ("ObjectLostError",),
    "ObjectReconstructionFailedLineageEvictedError": ("ObjectLostError",),
    "GetTimeoutError": ("RayError", "TimeoutError"),
    "PlasmaObjectNotAvailable": ("RayError",),
    "AsyncioActorExit": ("RayError",),
    "RuntimeEnvSetupError": ("RayError",),
    "TaskPlacementGroupRemoved": ("RayError",),
    "ActorPlacementGroupRemoved": ("RayError",),
    "PendingCallsLimitExceeded": ("RayError",),
    "TaskUnschedulableError": ("RayError",),
    "ActorUnschedulableError": ("RayError",),
    "ObjectRefStreamEndOfStreamError": ("RayError",),
    "OufOfBandObjectRefSerializationException": ("RayError",),
    "RayChannelError": ("RaySystemError",),
    "RayChannelTimeoutError": ("RayChannelError", "TimeoutError"),
    "RayCgraphCapacityExceeded": ("RaySystemError",),
    "RayDirectTransportError": ("RaySystemError",),
    "UnserializableException": ("RayError",),
    "AuthenticationError": ("RayError",),
}

# Ray's name -> actorhub's own name for the same class.
ALIASES = {
    "RayError": "ActorHubError",
    "RayActorError": "ActorError",
    "RayTaskError": "TaskError",
    "RaySystemError": "ActorHubSystemError",
    "PendingCallsLimitExceeded": "PendingCallsLimitExceededError",
    "RpcError": "RpcFailedError",
}


def _resolve(name: str) -> type[BaseException]:
    import builtins

    found = getattr(ex, name, None) or getattr(builtins, name)
    assert isinstance(found, type) and issubclass(found, BaseException), name
    return found


@pytest.mark.parametrize("name", sorted(RAY_EXCEPTIONS))
def test_ray_exception_exists_with_rays_bases(name: str) -> None:
    cls = _resolve(name)
    assert name in ex.__all__, f"{name} is not exported by actorhub.exceptions.__all__"
    assert issubclass(cls, ex.ActorHubError), f"{name} is outside actorhub's hierarchy"
    for base in RAY_EXCEPTIONS[name]:
        assert issubclass(cls, _resolve(base)), f"{name} must derive from {base}, as in Ray"


def test_aliases_are_the_same_classes() -> None:
    for ray_name, own_name in ALIASES.items():
        assert getattr(ex, ray_name) is getattr(ex, own_name), ray_name


def test_every_exported_name_is_an_actorhub_error() -> None:
    for name in ex.__all__:
        cls = getattr(ex, name)
        assert isinstance(cls, type) and issubclass(cls, ex.ActorHubError), name


@pytest.mark.parametrize(
    "name",
    sorted(n for n in RAY_EXCEPTIONS if n not in ALIASES and n not in {"RayTaskError", "ActorDiedError",
                                                                          "ActorUnavailableError"}),
)
def test_new_exceptions_carry_a_message_and_pickle(name: str) -> None:
    cls = getattr(ex, name)
    err = cls("what went wrong")
    assert "what went wrong" in str(err)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == str(err)


def test_token_refusal_is_rays_authentication_error() -> None:
    from actorhub.cluster.credentials import TokenRefusedError

    assert issubclass(TokenRefusedError, ex.AuthenticationError)
    assert issubclass(TokenRefusedError, PermissionError)
