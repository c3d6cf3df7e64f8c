"""Every prompt text LATM sends to a model, and nothing else.

Templates use ``str.format`` fields; literal braces are doubled.
"""

from latm.prompts.dispatcher import DISPATCH_SYSTEM, DISPATCH_USER
from latm.prompts.maker import (
    MAKER_SYSTEM,
    PROPOSE_USER,
    RETRY_BAD_REPLY,
    RETRY_FAILED_CASES,
)
from latm.prompts.user import USE_SYSTEM, USE_USER

__all__ = [
    "DISPATCH_SYSTEM",
    "DISPATCH_USER",
    "MAKER_SYSTEM",
    "PROPOSE_USER",
    "RETRY_BAD_REPLY",
    "RETRY_FAILED_CASES",
    "USE_SYSTEM",
    "USE_USER",
]
