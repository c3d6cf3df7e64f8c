"""The five nodes of LATM, one per module."""

from latm.nodes.dispatcher import dispatcher
from latm.nodes.propose import propose
from latm.nodes.use import use
from latm.nodes.verify import verify
from latm.nodes.wrap import wrap

__all__ = ["dispatcher", "propose", "use", "verify", "wrap"]
