"""The real local server for integration tests: started through ``latm.local``.

Tests that need it are skipped, with the reason, when ``latm local install`` has
not been run, unless ``LATM_LOCAL_REQUIRED=1`` (set by CI, which installs it):
then a missing install fails them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from latm.local import LocalEndpoints, LocalPaths, ensure_local_endpoints, missing_parts
from latm.local import server as srv


def local_endpoints() -> Iterator[LocalEndpoints]:
    """Yield the local endpoints; stop the server afterwards if this call started it."""
    paths = LocalPaths.from_env()
    missing = missing_parts(paths)
    if missing:
        reason = (
            f"local models not installed in {paths.root} (missing: {', '.join(missing)}); "
            "run `latm local install` or .ci/local-llm-setup.sh"
        )
        if os.environ.get("LATM_LOCAL_REQUIRED") == "1":
            pytest.fail(reason + " (LATM_LOCAL_REQUIRED=1)")
        pytest.skip(reason)
    was_running = srv.status(paths).running
    yield ensure_local_endpoints(paths=paths)
    if not was_running:
        assert "stopped" in srv.stop(paths)
        assert not srv.status(paths).running
