"""Progress events on the wire: typed events (zflock.events) to the dicts a following
client receives, and back.

The agent converts when it sends (Jobs.follow), the CLI when it receives: on both
sides of this edge code sees only the dataclasses. The dicts keep the keys the CLI
has always read ("kind" = "progress" | "round" | "cutover").
"""

from __future__ import annotations

from typing import Any, cast

from zflock.events import CutoverStep, Event, PrecopyRound, RoundDecision, StreamProgressed

WireEvent = dict[str, Any]
WireProgress = StreamProgressed | PrecopyRound | CutoverStep


def event_to_wire(event: Event, job: str) -> WireEvent | None:
    """What a client following job `job` receives for `event`; None: not sent."""
    match event:
        case StreamProgressed():
            return {"kind": "progress", "job": job, "step": event.step, "bytes": event.bytes,
                    "total": event.total, "rate": event.rate}  # fmt: skip
        case PrecopyRound():
            return {"kind": "round", "round": event.round, "type": event.kind,
                    "bytes": event.bytes, "seconds": event.seconds,
                    "decision": event.decision, "reason": event.reason}  # fmt: skip
        case CutoverStep():
            return {"kind": "cutover", "step": event.step, "seconds": event.seconds}
    return None


def event_from_wire(wire: WireEvent, volume: str) -> WireProgress | None:
    """The typed event a client received for `volume`; None for a kind it does not know
    (a newer agent's), which the client ignores."""
    kind = wire.get("kind")
    if kind == "progress":
        total = wire.get("total")
        return StreamProgressed(volume, str(wire.get("step", "")), int(wire.get("bytes") or 0),
                                None if total is None else int(total),
                                float(wire.get("rate") or 0.0))  # fmt: skip
    if kind == "round":
        return PrecopyRound(volume, int(wire.get("round") or 0), str(wire.get("type", "")),
                            int(wire.get("bytes") or 0), float(wire.get("seconds") or 0.0),
                            cast(RoundDecision, str(wire.get("decision", ""))),
                            str(wire.get("reason", "")))  # fmt: skip
    if kind == "cutover":
        return CutoverStep(volume, str(wire.get("step", "")), float(wire.get("seconds") or 0.0))
    return None
