"""Every prompt text LATM sends to a model, and nothing else.

Templates use ``str.format`` fields; literal braces are doubled.
"""

from latm.prompts.dispatcher import DISPATCH_SYSTEM, DISPATCH_USER
from latm.prompts.maker import (
    DESCRIBE_USER,
    DIRECT_INSTRUCTIONS,
    DIRECT_NAME,
    DIRECT_STAGE,
    DIRECT_TEMPLATE,
    LESSONS,
    MAKER_SYSTEM,
    PROPOSE_USER,
    RETRY_BAD_REPLY,
    RETRY_FAILED_CASES,
    RETRY_SOLVE,
    WRITE_INSTRUCTIONS,
)
from latm.prompts.user import USE_CALL, USE_SYSTEM, USE_USER

__all__ = [
    "DESCRIBE_USER",
    "DIRECT_INSTRUCTIONS",
    "DIRECT_NAME",
    "DIRECT_STAGE",
    "DIRECT_TEMPLATE",
    "DISPATCH_SYSTEM",
    "DISPATCH_USER",
    "LESSONS",
    "MAKER_SYSTEM",
    "PROPOSE_USER",
    "RETRY_BAD_REPLY",
    "RETRY_FAILED_CASES",
    "RETRY_SOLVE",
    "USE_CALL",
    "USE_SYSTEM",
    "USE_USER",
    "WRITE_INSTRUCTIONS",
]
