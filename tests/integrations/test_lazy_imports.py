"""``import ddecomp`` and ``import ddecomp.integrations`` import no framework (they are extras)."""

from __future__ import annotations

from tests._fixtures import run_python

FRAMEWORKS = ("transformers", "accelerate", "lightning", "pytorch_lightning", "olmo_core")


def test_importing_ddecomp_and_its_integrations_package_imports_no_framework() -> None:
    code = (
        "import sys, ddecomp, ddecomp.integrations; "
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
    )
    r = run_python("-c", code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"
