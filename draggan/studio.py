"""``draggan-studio``: start the app (``app.py``), or say which extra it needs when Gradio is missing."""

from __future__ import annotations

import sys


def main(argv=None) -> int | None:
    try:
        import app
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("gradio", "gradio_client"):
            print("draggan-studio needs the app's packages: pip install 'draggan-studio[app]' "
                  "(or pip install -r requirements.txt in a checkout)", file=sys.stderr)
            return 1
        raise
    return app.main(argv)


if __name__ == "__main__":
    sys.exit(main())
