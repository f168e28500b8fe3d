"""``python -m analogist ...``: runs :func:`analogist_cli.main.main` inside the pack."""

from __future__ import annotations

from . import import_pack

if __name__ == "__main__":
    import_pack()
    from comfyui_analogist.analogist_cli.main import main

    raise SystemExit(main())
