"""Session fixtures for runs through the real ComfyUI server.

One server per test session (start-up takes ~15 s on CPU), with the random SD1.5
inpainting checkpoint (``sd15_checkpoint``, shared from tests/conftest.py) in
``models/checkpoints``. Tests that need a differently configured server (a broken
dependency, say) start their own.
"""

from __future__ import annotations

import pytest
from support.comfy_server import ComfyServer, make_workspace


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, sd15_checkpoint):
    workspace = make_workspace(
        tmp_path_factory.mktemp("comfyui"), models={"checkpoints": [sd15_checkpoint]}
    )
    server = ComfyServer(workspace).start()
    yield server
    server.stop()
