"""The environment every offline check of a published cache runs in, and what they share.

Import this module before huggingface_hub or transformers: both read their environment once.
Offline mode, no telemetry or progress bars, an endpoint on a closed loopback port (nothing can
reach a network), a throwaway HF_HOME, and none of the caller's token or cache variables.
"""

import atexit
import hashlib
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="hf-home.")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], True)
for name in ("HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
    os.environ.pop(name, None)


def sha256_of(path):
    """The sha256 of the file at `path`, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 16):
            digest.update(chunk)
    return digest.hexdigest()
