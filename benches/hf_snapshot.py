"""snapshot_download of one repository into a fresh cache, for benches/fetch.sh (part shards).

Usage: python hf_snapshot.py REPO CACHE_DIR  (HF_ENDPOINT names the origin, which must answer
the Hub API: tests/e2e/origin.sh api; HF_HUB_ENABLE_HF_TRANSFER=1 selects hf_transfer with
huggingface_hub 0.x). Prints the snapshot folder.
"""

import sys

from huggingface_hub import snapshot_download

print(snapshot_download(repo_id=sys.argv[1], cache_dir=sys.argv[2]))
