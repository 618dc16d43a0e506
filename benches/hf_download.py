"""hf_hub_download of one file into a fresh cache, for benches/fetch.sh.

Usage: python hf_download.py REPO FILENAME CACHE_DIR  (HF_ENDPOINT names the origin;
HF_HUB_ENABLE_HF_TRANSFER=1 selects hf_transfer with huggingface_hub 0.x).
"""

import sys

from huggingface_hub import hf_hub_download

print(hf_hub_download(repo_id=sys.argv[1], filename=sys.argv[2], cache_dir=sys.argv[3]))
