"""Autoscaling (Ray's cluster launcher and autoscaler, for one machine): `actorhub up cluster.yaml`
starts a head and `python -m actorhub.autoscaler`, which adds and removes node agents as demand
waits or nodes idle. `actorhub.autoscaler.sdk.request_resources` is Ray's."""

from actorhub.autoscaler import sdk

__all__ = ["sdk"]
