"""Shared fixtures. Tests that need ../shared (real text, tokenizer files, stories260K) or an optional extra
(requirements-dev.txt) skip on a user's machine without it, but fail under CI=true, where it must be present."""
import importlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# dtype='auto' picks bf16 on CPUs that compute it natively (device.py); tests compare numbers across runs,
# processes and machines, so they run in float32 unless a test asks otherwise (tests/test_device.py does)
os.environ.setdefault('NANOGROW_CPU_BF16', 'off')
SHARED = REPO.parent / "shared"


@pytest.fixture
def repo():
    return REPO


@pytest.fixture
def shared():
    if not SHARED.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {SHARED} is missing")
        pytest.skip(f"needs {SHARED} (real data beside the repo)")
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tokenizers" / "tiktoken_cache"))
    return SHARED


def require(module):
    """Import an optional extra (transformers, safetensors, ...): skip without it on a user's machine, fail under
    CI=true, where requirements-dev.txt is installed and a silent skip would hide every test that needs it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the optional extra {module} is missing ({e})")
        pytest.skip(f"needs {module} (pip install -r requirements-dev.txt)")
