"""The environment every offline check of a published cache runs in.

Import this module before huggingface_hub or transformers: both read their environment once.
Offline mode, no telemetry or progress bars, an endpoint on a closed loopback port (nothing can
reach a network), a throwaway HF_HOME, and none of the caller's token or cache variables.
"""

import atexit
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
