"""`stemrun dashboard`: a web console over the stores (optional extra `stemrun[dashboard]`).

Nothing here imports the web stack at import time, so `require()` can say what to install.
"""

from __future__ import annotations

import importlib.util

from stemrun.errors import MissingDependency

#: The import names the `dashboard` extra provides.
PACKAGES = ("starlette", "uvicorn", "jinja2")
INSTALL_HINT = "pip install 'stemrun[dashboard]'"


def require() -> None:
    """Check the `dashboard` extra is installed; raises MissingDependency naming what to run."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependency(
            f"the dashboard needs {', '.join(missing)}, which is not installed: {INSTALL_HINT}"
        )
