"""Checks, offline, that a Hub cache holds a complete model the real serving libraries load.

Usage: python check_offline.py --cache DIR --repo ORG/NAME [--revision REV] [--commit SHA]
                               [--store DIR] [--expect FILES.json]

With HF_HUB_OFFLINE=1 (set before huggingface_hub and transformers are imported; the endpoint
is a closed loopback port, so nothing can reach a network):
  - huggingface_hub: `snapshot_download(repo, local_files_only=True)` with no revision (and
    with `--revision` and `--commit` when given) returns the commit's snapshot; `hf_hub_download`
    of every file of the snapshot (no revision, and with the commit) returns that very file;
    `scan_cache_dir` reports no warning, and lists the repo with every file under the commit
    and the ref of the revision;
  - transformers: `AutoConfig.from_pretrained` and `AutoTokenizer.from_pretrained` by repo id
    (no revision, and with the commit as revision) and from `--store` (a model folder such as
    `<store_dir>/<id>`) agree with each other and with config.json;
  - safetensors: `safe_open` of every shard `model.safetensors.index.json` names (or of
    `model.safetensors`) holds exactly the tensors the index maps to it, in the snapshot and
    in the store folder, and the index's total_size is their size.
  - `--expect FILES.json` ({path: {"sha256": ..., "size": ...}}, e.g. make_tiny.py's "files"):
    the snapshot holds exactly these files with these bytes.
Prints a JSON report {"ok": bool, "commit": ..., "files": [...], "checks": [{"check", "ok",
"detail"}]} on stdout and exits 1 if any check failed (2 on bad usage).
"""

import argparse
import json
import os
import sys
import traceback
import warnings

from offline_env import sha256_of  # noqa: E402  (before huggingface_hub and transformers)


class Report:
    def __init__(self):
        self.checks = []

    def check(self, ok, check, detail=""):
        """Records a check; `detail` is kept only when it failed."""
        self.checks.append({"check": check, "ok": bool(ok), "detail": "" if ok else detail})
        print(("ok   " if ok else "FAIL ") + check + (f": {detail}" if detail and not ok else ""), file=sys.stderr)
        return bool(ok)

    def attempt(self, check, run):
        """Runs `run()` as the check `check`: passed when it returns, failed when it raises.
        Returns its result or None."""
        try:
            result = run()
        except Exception as e:  # noqa: BLE001 - every failure is reported, not raised
            self.check(False, check, f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}")
            return None
        self.check(True, check)
        return result

    @property
    def ok(self):
        return all(c["ok"] for c in self.checks)


def files_under(folder):
    """Every file under `folder` (links followed), as repo paths."""
    found = []
    for root, _, names in os.walk(folder, followlinks=True):
        for name in names:
            found.append(os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/"))
    return sorted(found)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", required=True, help="the Hub cache (HF_HUB_CACHE)")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--revision", help="the ref the cache should have (e.g. main)")
    parser.add_argument("--commit", help="the 40-hex commit the snapshot must be")
    parser.add_argument("--store", help="a model folder to load from as well (<store_dir>/<id>)")
    parser.add_argument("--expect", help="JSON {path: {sha256, size}} the snapshot must hold exactly")
    args = parser.parse_args()
    cache, repo = os.path.abspath(args.cache), args.repo
    report = Report()

    import huggingface_hub
    from huggingface_hub import hf_hub_download, scan_cache_dir, snapshot_download

    versions = {"huggingface_hub": huggingface_hub.__version__}

    # --- huggingface_hub -------------------------------------------------------------------
    snapshots = os.path.join(cache, "models--" + repo.replace("/", "--"), "snapshots")
    folder = report.attempt(
        "snapshot_download(repo, local_files_only=True)",
        lambda: snapshot_download(repo, cache_dir=cache, local_files_only=True),
    )
    commit = args.commit
    if folder is not None:
        report.check(
            os.path.dirname(os.path.abspath(folder)) == os.path.abspath(snapshots),
            "snapshot_download(repo) is a snapshot of the cache",
            folder,
        )
        found = os.path.basename(folder)
        if commit is not None:
            report.check(found == commit, "snapshot_download(repo) is the commit's snapshot", f"{found} != {commit}")
        commit = commit or found
    for revision in [r for r in (args.revision, args.commit) if r]:
        other = report.attempt(
            f"snapshot_download(repo, revision={revision!r}, local_files_only=True)",
            lambda revision=revision: snapshot_download(
                repo, revision=revision, cache_dir=cache, local_files_only=True
            ),
        )
        if other is not None and folder is not None:
            report.check(
                os.path.samefile(other, folder),
                f"snapshot_download(repo, revision={revision!r}) is the same snapshot",
                f"{other} != {folder}",
            )
    files = files_under(folder) if folder else []
    report.check(files, "the snapshot holds files", str(files))
    digests = {}
    for path in files:
        in_snapshot = os.path.join(folder, path)
        digests[path] = {"size": os.path.getsize(in_snapshot), "sha256": sha256_of(in_snapshot)}
        report.check(
            os.path.islink(in_snapshot) and not os.path.isabs(os.readlink(in_snapshot)),
            f"snapshot {path} is a relative link into blobs",
        )
        for revision in [None, commit]:
            got = report.attempt(
                f"hf_hub_download(repo, {path!r}, revision={revision!r})",
                lambda path=path, revision=revision: hf_hub_download(
                    repo, path, revision=revision, cache_dir=cache, local_files_only=True
                ),
            )
            if got is not None:
                report.check(
                    os.path.samefile(got, in_snapshot),
                    f"hf_hub_download(repo, {path!r}, revision={revision!r}) is the snapshot's file",
                    got,
                )
    if args.expect:
        with open(args.expect) as f:
            expected = json.load(f)
        expected = expected.get("files", expected)
        report.check(sorted(expected) == files, "the snapshot holds exactly the expected files", f"{files}")
        for path, want in expected.items():
            have = digests.get(path)
            report.check(
                have is not None and have["sha256"] == want["sha256"] and have["size"] == want["size"],
                f"{path} has the expected bytes",
                f"{have} != {want}",
            )

    with warnings.catch_warnings(record=True) as raised:
        warnings.simplefilter("always")
        info = report.attempt("scan_cache_dir", lambda: scan_cache_dir(cache))
    if info is not None:
        report.check(not info.warnings, "scan_cache_dir: no warnings", str([str(w) for w in info.warnings]))
        report.check(not raised, "scan_cache_dir: no Python warnings", str([str(w.message) for w in raised]))
        incomplete = getattr(info, "incomplete_files", None) or []
        report.check(not incomplete, "scan_cache_dir: no incomplete files", str(incomplete))
        repos = {r.repo_id: r for r in info.repos}
        cached = repos.get(repo)
        if report.check(cached is not None, "scan_cache_dir lists the repo", str(sorted(repos))):
            revisions = {r.commit_hash: r for r in cached.revisions}
            rev = revisions.get(commit)
            if report.check(rev is not None, "scan_cache_dir lists the commit", str(sorted(revisions))):
                listed = sorted(os.path.relpath(f.file_path, rev.snapshot_path).replace(os.sep, "/") for f in rev.files)
                report.check(listed == files, "scan_cache_dir lists every file under the commit", str(listed))
                if args.revision and len(args.revision) != 40:
                    report.check(args.revision in rev.refs, f"scan_cache_dir: ref {args.revision} -> commit", str(rev.refs))

    # --- transformers ----------------------------------------------------------------------
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    versions["transformers"] = transformers.__version__
    sources = [("repo id", repo, {}), ("repo id @ commit", repo, {"revision": commit})]
    if args.store:
        sources.append(("store folder", os.path.abspath(args.store), {}))
    config_json = None
    if folder and os.path.exists(os.path.join(folder, "config.json")):
        with open(os.path.join(folder, "config.json")) as f:
            config_json = json.load(f)
    sample = "Hello world, the tiny model is loaded offline!"
    encodings = {}
    for name, source, kwargs in sources:
        config = report.attempt(
            f"AutoConfig.from_pretrained({name})",
            lambda source=source, kwargs=kwargs: AutoConfig.from_pretrained(source, cache_dir=cache, **kwargs),
        )
        if config is not None and config_json is not None:
            report.check(
                config.model_type == config_json.get("model_type")
                and config.hidden_size == config_json.get("hidden_size")
                and config.vocab_size == config_json.get("vocab_size"),
                f"AutoConfig.from_pretrained({name}) is config.json",
                f"{config.model_type} {config.to_dict()}",
            )
        tokenizer = report.attempt(
            f"AutoTokenizer.from_pretrained({name})",
            lambda source=source, kwargs=kwargs: AutoTokenizer.from_pretrained(source, cache_dir=cache, **kwargs),
        )
        if tokenizer is not None:
            ids = report.attempt(f"tokenize with the tokenizer of {name}", lambda t=tokenizer: t(sample)["input_ids"])
            if ids is not None:
                encodings[name] = ids
                report.check(
                    len(ids) > 2 and ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id,
                    f"the tokenizer of {name} frames the text with its special tokens",
                    str(ids),
                )
    report.check(
        len(encodings) == len(sources) and len({json.dumps(v) for v in encodings.values()}) == 1,
        "every tokenizer encodes the sample alike",
        json.dumps(encodings),
    )

    # --- safetensors -----------------------------------------------------------------------
    import safetensors
    from safetensors import safe_open

    versions["safetensors"] = safetensors.__version__
    for name, base in [("snapshot", folder)] + ([("store folder", os.path.abspath(args.store))] if args.store else []):
        if base is None:
            continue
        index_path = os.path.join(base, "model.safetensors.index.json")
        if os.path.exists(index_path):
            with open(index_path) as f:
                index = json.load(f)
            weight_map = index["weight_map"]
        elif os.path.exists(os.path.join(base, "model.safetensors")):
            index, weight_map = None, None
        else:
            report.check(False, f"{name}: safetensors weights present", str(files_under(base)))
            continue
        shards = sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]
        total = 0
        for shard in shards:
            def read(shard=shard):
                with safe_open(os.path.join(base, shard), framework="numpy") as f:
                    return {key: f.get_tensor(key) for key in f.keys()}

            tensors = report.attempt(f"{name}: safe_open {shard}", read)
            if tensors is None:
                continue
            total += sum(int(t.nbytes) for t in tensors.values())
            if weight_map:
                mapped = sorted(k for k, v in weight_map.items() if v == shard)
                report.check(sorted(tensors) == mapped, f"{name}: {shard} holds the tensors the index maps to it")
        if index is not None:
            report.check(
                index.get("metadata", {}).get("total_size") == total,
                f"{name}: the index's total_size is the shards' tensor bytes",
                f"{index.get('metadata')} != {total}",
            )
        report.check(len(shards) >= 1, f"{name}: {len(shards)} shard(s) opened")

    result = {
        "ok": report.ok,
        "repo": repo,
        "commit": commit,
        "snapshot": folder,
        "versions": versions,
        "files": digests,
        "checks": report.checks,
    }
    json.dump(result, sys.stdout, indent=2)
    print()
    failed = [c["check"] for c in report.checks if not c["ok"]]
    print(f"{len(report.checks) - len(failed)} passed, {len(failed)} failed", file=sys.stderr)
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
