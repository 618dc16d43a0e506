"""Checks that the real huggingface_hub reads a cache written by `models-fetch sync`, offline.

Usage: python hf_check.py SPEC.json

SPEC.json: {"cache_dir": "...", "files": [{"repo_id": "org/name", "filename": "path/in/repo",
            "revision": "main", "sha256": "<64 hex>", "size": 123}, ...]}

For every file: `hf_hub_download(..., local_files_only=True)` and `try_to_load_from_cache` return
a path inside the repo's snapshot whose content has the expected sha256 and size, and
`snapshot_download(..., local_files_only=True)` returns the snapshot folder. Then
`scan_cache_dir` must report no warning, no incomplete file, and every file under its commit.
Prints one line per check; exits 1 listing every failure. Never touches the network: the
library runs with HF_HUB_OFFLINE=1 and an endpoint on a closed loopback port.
"""

import json
import os
import sys

# The shared offline environment (tests/models/offline_env.py), before huggingface_hub.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
from offline_env import sha256_of  # noqa: E402

import huggingface_hub  # noqa: E402
from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download, try_to_load_from_cache  # noqa: E402


def main():
    spec = json.load(open(sys.argv[1]))
    cache_dir = spec["cache_dir"]
    failures = []
    print(f"huggingface_hub {huggingface_hub.__version__}, cache {cache_dir}")

    def check(ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    for f in spec["files"]:
        repo_id, filename, revision = f["repo_id"], f["filename"], f["revision"]
        name = f"{repo_id}@{revision}:{filename}"
        snapshots = os.path.realpath(os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"), "snapshots"))
        try:
            path = hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, local_files_only=True
            )
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            check(False, f"hf_hub_download {name}: {type(e).__name__}: {e}")
            continue
        check(
            os.path.realpath(os.path.dirname(path)).startswith(snapshots + os.sep),
            f"hf_hub_download {name} -> {path} is in {snapshots}",
        )
        check(os.path.getsize(path) == f["size"], f"hf_hub_download {name}: size {os.path.getsize(path)} == {f['size']}")
        digest = sha256_of(path)
        check(digest == f["sha256"], f"hf_hub_download {name}: sha256 {digest} == {f['sha256']}")
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir, revision=revision)
        check(isinstance(cached, str) and os.path.samefile(cached, path), f"try_to_load_from_cache {name} -> {cached}")
        try:
            folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True)
            check(
                os.path.samefile(os.path.join(folder, filename), path),
                f"snapshot_download {repo_id}@{revision} -> {folder} holds {filename}",
            )
        except Exception as e:  # noqa: BLE001
            check(False, f"snapshot_download {repo_id}@{revision}: {type(e).__name__}: {e}")

    info = scan_cache_dir(cache_dir)
    check(not info.warnings, f"scan_cache_dir: no warnings {[str(w) for w in info.warnings]}")
    incomplete = getattr(info, "incomplete_files", None) or []
    check(not incomplete, f"scan_cache_dir: no incomplete files {[str(i.file_path) for i in incomplete]}")
    repos = {r.repo_id: r for r in info.repos}
    for f in spec["files"]:
        repo = repos.get(f["repo_id"])
        if repo is None:
            check(False, f"scan_cache_dir: repo {f['repo_id']} listed (found {sorted(repos)})")
            continue
        paths = {os.path.relpath(file.file_path, rev.snapshot_path) for rev in repo.revisions for file in rev.files}
        check(f["filename"] in paths, f"scan_cache_dir: {f['repo_id']} lists {f['filename']} (found {sorted(paths)})")
        refs = {ref for rev in repo.revisions for ref in rev.refs}
        if len(f["revision"]) != 40:
            check(f["revision"] in refs, f"scan_cache_dir: {f['repo_id']} has ref {f['revision']} (found {sorted(refs)})")

    if failures:
        print(f"{len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
