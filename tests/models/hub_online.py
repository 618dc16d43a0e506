"""Runs the real huggingface_hub ONLINE against a test endpoint and reports what it got.

Usage: python hub_online.py SPEC.json

SPEC.json: {"endpoint": "http://127.0.0.1:PORT", "cache_dir": "...", "token": "hf_..." or null,
            "ops": [OP, ...]}
OP, each with "repo" and optional "revision" and "token" (false: send no token; default true):
  {"op": "snapshot_download"}                   -> the snapshot folder
  {"op": "hf_hub_download", "filename": "..."}  -> the file's path in the cache
  {"op": "list_repo_tree"}                      -> HfApi().list_repo_tree(recursive=True) as
                                                   [{"type", "path", "oid", "size", "lfs": {"sha256", "size", "pointer_size"}}]
  {"op": "model_info"}                          -> HfApi().model_info(files_metadata=True) as
                                                   {"id", "sha", "private", "gated", "siblings": [{"rfilename", "size", "blob_id", "lfs"}]}
Prints {"versions": {...}, "results": [{"op", "ok", "value" | "error", "error_code", "status"}]}: a
failing op is reported (its exception's class name, the response's X-Error-Code and status), not
raised. Only the endpoint is contacted: it must be on the loopback range (127.0.0.0/8).
"""

import ipaddress
import json
import os
import shutil
import sys
import tempfile
import urllib.parse

spec = json.load(open(sys.argv[1]))
host = urllib.parse.urlsplit(spec["endpoint"]).hostname
if not ipaddress.ip_address(host).is_loopback:
    sys.exit(f"refusing a non-loopback endpoint {spec['endpoint']}")

# Before the import: huggingface_hub reads its environment once.
home = tempfile.mkdtemp(prefix="hf-home.")
os.environ.update(
    HF_ENDPOINT=spec["endpoint"],
    HF_HOME=home,
    HF_HUB_DISABLE_TELEMETRY="1",
    HF_HUB_DISABLE_PROGRESS_BARS="1",
    HF_HUB_DISABLE_XET="1",
    HF_HUB_OFFLINE="0",
    NO_PROXY="*",
)
for var in ["HF_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]:
    os.environ.pop(var, None)
    os.environ.pop(var.lower(), None)

import huggingface_hub  # noqa: E402
from huggingface_hub import HfApi, hf_hub_download, snapshot_download  # noqa: E402
from huggingface_hub.hf_api import RepoFile  # noqa: E402


def run(op):
    token = spec.get("token") if op.get("token", True) else False
    repo, revision = op["repo"], op.get("revision")
    api = HfApi(endpoint=spec["endpoint"], token=token)
    kind = op["op"]
    if kind == "snapshot_download":
        return snapshot_download(
            repo, revision=revision, cache_dir=spec["cache_dir"], endpoint=spec["endpoint"], token=token
        )
    if kind == "hf_hub_download":
        return hf_hub_download(
            repo, op["filename"], revision=revision, cache_dir=spec["cache_dir"], endpoint=spec["endpoint"], token=token
        )
    if kind == "list_repo_tree":
        entries = []
        for e in api.list_repo_tree(repo, revision=revision, recursive=True):
            if isinstance(e, RepoFile):
                lfs = e.lfs and {"sha256": e.lfs.sha256, "size": e.lfs.size, "pointer_size": e.lfs.pointer_size}
                entries.append({"type": "file", "path": e.path, "oid": e.blob_id, "size": e.size, "lfs": lfs})
            else:
                entries.append({"type": "directory", "path": e.path, "oid": e.tree_id})
        return entries
    if kind == "model_info":
        info = api.model_info(repo, revision=revision, files_metadata=True)
        siblings = [
            {
                "rfilename": s.rfilename,
                "size": s.size,
                "blob_id": s.blob_id,
                "lfs": s.lfs and {"sha256": s.lfs.sha256, "size": s.lfs.size, "pointer_size": s.lfs.pointer_size},
            }
            for s in info.siblings
        ]
        return {"id": info.id, "sha": info.sha, "private": info.private, "gated": info.gated, "siblings": siblings}
    raise ValueError(f"unknown op {kind}")


results = []
for op in spec["ops"]:
    result = {"op": op}
    try:
        result.update(ok=True, value=run(op))
    except Exception as e:  # noqa: BLE001 - reported, not raised
        response = getattr(e, "response", None)
        result.update(
            ok=False,
            error=type(e).__name__,
            message=str(e)[:500],
            error_code=response.headers.get("X-Error-Code") if response is not None else None,
            status=response.status_code if response is not None else None,
        )
    results.append(result)
shutil.rmtree(home, True)
json.dump({"versions": {"huggingface_hub": huggingface_hub.__version__}, "results": results}, sys.stdout, indent=2)
print()
