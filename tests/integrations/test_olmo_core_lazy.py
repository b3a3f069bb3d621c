"""``import ddecomp`` (and ``ddecomp.integrations``) never imports OLMo-core; the adapter does."""

from __future__ import annotations

import importlib.util

import pytest

from tests._fixtures import run_python

PROBE = (
    "import sys, ddecomp, ddecomp.integrations, ddecomp.loading.vsl, ddecomp.training.loop; "
    "print(sorted(m for m in sys.modules if m.split('.')[0] == 'olmo_core'))"
)


def test_ddecomp_does_not_import_olmo_core() -> None:
    r = run_python("-c", PROBE)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "[]"


@pytest.mark.slow  # a fresh process importing OLMo-core: ~20 s on the shared 2 cores
def test_the_adapter_imports_olmo_core_or_says_which_extra() -> None:
    r = run_python("-c", "import ddecomp.integrations.olmo_core")
    if importlib.util.find_spec("olmo_core") is not None:
        assert r.returncode == 0, r.stderr[-2000:]
    else:
        assert "pip install 'ddecomp[olmo-core]'" in r.stderr
