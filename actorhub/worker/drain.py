"""The worker's side of a node drain (`hub/node_drain.py` asks through `Worker.DrainActor`).

The actor stops starting calls, the calls under way end and their replies leave, then every call
stream ends with the trailer `actorhub-stream: moved` (`wire.transport.STREAM_MOVED`): each call
its caller sent on it and got no answer for never ran here, so the caller puts it back in line
for the actor's next incarnation without spending a retry (`wire/call_state.py`). Streams
opened later end the same way at once.

- Moving (`move`): the calls not started are left unanswered (they follow the actor), and once
  the calls under way ended an actor that checkpoints (`worker/checkpoints.py`) saves a final
  checkpoint, which its next incarnation restores.
- Not moving (the actor is not restartable, or no other node can take it now): each call not
  started is answered with an `ActorUnavailableError` saying the node is draining.

The common call path pays nothing for this: the mailboxes already check `exit_reason` before
each call (for a graceful exit); the refusal is read only once it is set.
"""

from __future__ import annotations

import logging
import time

from actorhub.wire.errors import ErrorKind, system_error_info
from actorhub.worker.mailbox import ActorInstance, Mailbox

log = logging.getLogger(__name__)


def stop_calls(actor: ActorInstance, mailbox: Mailbox, move: bool, reason: str, timeout_s: float) -> bool:
    """Blocking (off the server's loop): True when every call under way ended within `timeout_s`
    (and, moving, the final checkpoint was attempted), so none runs here any more."""
    if not move:
        # Before exit_reason: a mailbox that sees exit_reason reads the refusal next.
        actor.refusal = system_error_info(reason, ErrorKind.ACTOR_UNAVAILABLE)
    if not actor.exit_reason:
        actor.exit_reason = reason
    began = time.monotonic()
    ended = False

    def last() -> None:
        # Each mailbox's wait returns before its timeout only once its calls ended.
        nonlocal ended
        if time.monotonic() - began >= timeout_s:
            return
        ended = True
        if move and actor.checkpointer is not None:
            try:
                actor.checkpointer.take()
            except Exception as e:  # the actor still moves: it restarts from its previous checkpoint
                log.error("the final checkpoint of actor %s before its move failed: %r", actor.class_name, e)

    mailbox.finish(last, timeout_s)
    return ended
