"""What a node's lease desk lends to tasks besides CPUs: granted by the hub, held in its table.

CPUs are shared by a two-way report (the desk lends, the hub places actors in what is left).
GPUs cannot be shared that way: a GPU id has one owner at a time, and a desk lending GPU 0 while
the hub places an actor there from an older report would give both the same device. So the
hub is the one allocator of everything but CPUs: a lease that needs a vector makes the desk
claim it in its report (`LentCpus.claim`), the hub takes it out of the node's `available` and
`gpus` under the table's lock and answers with the GPU ids, and every report says what the desk
still lends (absolute, so a report repeated or lost leaves nothing counted twice). Actors are
then placed against `available` as before, which already excludes what tasks hold.

A claim is refused when the node has not that much free, and also when a pending actor waits for
it: one that would fit on the node once tasks give back what they were lent, as CPUs are kept
for actors that wait for them (`ActorRecord.waiting_on`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from actorhub.hub.records import ActorRecord, NodeRecord
from actorhub.hub.resources import EPSILON, fits, give_back, take


@dataclass(frozen=True)
class LoanAnswer:
    """What the hub tells a desk besides CPUs: whether its claim was granted, with which GPUs,
    and the node's totals now (placement groups add and remove resources while it runs)."""

    granted: bool = False
    gpu_ids: tuple[int, ...] = ()
    node_resources: Mapping[str, float] = field(default_factory=dict)
    bundle_index: int = -1  # the GPU ids are of this bundle of the claim's group (hub/bundle_gpus.py)


def replace_loans(node: NodeRecord, lent: Mapping[str, float], gpus: Mapping[int, float]) -> bool:
    """The desk lends exactly `lent` (GPU ids: `gpus`) now. True if anything came back, so that
    pending actors may fit."""
    if not lent and not gpus and not node.lent_resources and not node.lent_gpus:
        return False
    fell = any(lent.get(name, 0.0) < amount - EPSILON for name, amount in node.lent_resources.items())
    give_back(node.available, node.lent_resources)
    for name in node.lent_resources:
        if name not in node.resources:
            node.available.pop(name, None)  # gone while lent (a placement group removed): nothing comes back
    for gpu, amount in node.lent_gpus.items():
        node.gpus.release([gpu], amount)
    take(node.available, lent)
    for gpu, amount in gpus.items():
        node.gpus.claim([gpu], amount)
    node.lent_resources = {name: amount for name, amount in lent.items() if amount > 0}
    node.lent_gpus = {gpu: amount for gpu, amount in gpus.items() if amount > 0}
    return fell


def grant_claim(node: NodeRecord, claim: Mapping[str, float], pending: Iterable[ActorRecord]) -> LoanAnswer:
    """Lend `claim` on top of what the desk lends, if it is free and no pending actor waits for it."""
    gpu = claim.get("GPU", 0.0)
    if not fits(claim, node.available) or not node.gpus.can_assign(gpu):
        return LoanAnswer()
    if any(_waits_for(rec, node, claim) for rec in pending):
        return LoanAnswer()
    take(node.available, claim)
    node.lent_resources = {name: node.lent_resources.get(name, 0.0) + claim.get(name, 0.0)
                           for name in {*node.lent_resources, *claim}}
    ids = node.gpus.assign(gpu) or []
    share = gpu if gpu < 1 else 1.0
    for i in ids:
        node.lent_gpus[i] = node.lent_gpus.get(i, 0.0) + share
    return LoanAnswer(True, tuple(ids))


def _waits_for(rec: ActorRecord, node: NodeRecord, claim: Mapping[str, float]) -> bool:
    """Whether pending actor `rec` asks for some of `claim` and would fit on `node` once its
    tasks gave back what they hold."""
    need = rec.spec.resources
    if rec.placing or rec.infeasible or not need or not any(name in need for name in claim):
        return False
    if rec.spec.node_id and rec.spec.node_id != node.node_id:
        return False
    if node.num_cpus < max(rec.spec.num_cpus, rec.spec.placement_cpus) - EPSILON:
        return False
    free = dict(node.available)
    give_back(free, node.lent_resources)
    return fits(need, free)
