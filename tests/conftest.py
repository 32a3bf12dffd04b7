"""Shared fixtures. Tests that need ../shared (real text, tokenizer files, stories260K) skip on a
user's machine without it, but fail under CI=true, where it must be present."""
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
