"""The two binary packages of one `make deb` (built once per test session): the product
autogit-agent_<v>_<arch>.deb and the demo's autogit-agent-demo_<v>_all.deb.
AUTOGIT_DEB / AUTOGIT_DEMO_DEB name prebuilt ones instead."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from pathlib import Path

from ci_policy import require

REPO = Path(__file__).resolve().parents[2]


@functools.cache
def built_debs() -> tuple[Path, Path]:
    """(product .deb, demo .deb)."""
    if os.environ.get("AUTOGIT_DEB") and os.environ.get("AUTOGIT_DEMO_DEB"):
        product, demo = Path(os.environ["AUTOGIT_DEB"]).resolve(), Path(os.environ["AUTOGIT_DEMO_DEB"]).resolve()
    else:
        require(shutil.which("dh_virtualenv") is not None, "dh-virtualenv (and debhelper, lintian) is not available (scripts/dev-setup installs it)")
        out = subprocess.run(["make", "-C", str(REPO), "deb"], capture_output=True, text=True, timeout=1200)
        assert out.returncode == 0, f"make deb failed:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
        product = REPO / "dist" / re.findall(r"dist/(autogit-agent_\S+\.deb)", out.stdout)[-1]
        demo = REPO / "dist" / re.findall(r"dist/(autogit-agent-demo_\S+\.deb)", out.stdout)[-1]
    assert product.is_file() and demo.is_file(), (product, demo)
    return product, demo
