"""A source that has commands carried out elsewhere: a cluster daemon that follows the
daemon holding the camera's link hands every command to it."""

from __future__ import annotations

from zope.interface import Attribute, Interface

from camproxy.hub.commands import Command
from camproxy.hub.viewer import IRequester


class ICommandRelay(Interface):
    """Implemented by sources whose commands may be decided somewhere else."""

    relaying = Attribute(
        "bool: True while commands go elsewhere (exclusive control and the link's state "
        "are decided there too)"
    )

    def relay(command: Command, requester: IRequester) -> None:
        """Have ``command`` carried out where the camera is held; a refusal (also a late
        one, like a camera's "position out of bounds") is reported to ``requester``."""
