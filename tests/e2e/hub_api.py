"""Writes the Hub API answers of one repository at one revision as static files, for
tests/e2e/origin.sh `api` (nginx serves ROOT/api/... + ".json" as application/json).

Usage: python3 hub_api.py ROOT ORG/NAME REV FILES_TSV

FILES_TSV is origin.sh's record of the files added at REV, one line each:
commit, path, sha256, size, git blob sha1 (of the LFS pointer for an LFS file), lfs|git,
public|private. Written:

  api/models/ORG/NAME/revision/{REV,COMMIT}.json   model info: id, sha, siblings (rfilename,
                                                  size, blobId, lfs) like files_metadata=true
  api/models/ORG/NAME.json                         the same, when REV is main
  api/models/ORG/NAME/tree/{REV,COMMIT}.json       the recursive tree: folders, then files
                                                  (type, oid, size, path, lfs), one page

A folder's oid is a sha1 of its path and the commit, not git's tree id. Prints the commit.
"""

import hashlib
import json
import os
import sys


def write(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def main():
    root, repo, revision, tsv = sys.argv[1:5]
    rows = []
    with open(tsv) as f:
        for line in f:
            commit, path, sha256, size, oid, storage, visibility = line.rstrip("\n").split("\t")
            rows.append((commit, path, sha256, int(size), oid, storage, visibility))
    commits = sorted({r[0] for r in rows})
    if len(commits) != 1:
        sys.exit(f"hub_api.py: {repo}@{revision} has files of {len(commits)} commits: {' '.join(commits)}")
    if any(r[6] == "private" for r in rows):
        sys.exit(f"hub_api.py: {repo}@{revision} is private; the static API has no token check")
    commit = commits[0]
    rows.sort(key=lambda r: r[1])

    def pointer_size(r):  # "version https://git-lfs.github.com/spec/v1\noid sha256:{64}\nsize {N}\n"
        return 125 + len(str(r[3]))

    siblings = []
    for r in rows:
        sibling = {"rfilename": r[1], "size": r[3], "blobId": r[4]}
        if r[5] == "lfs":
            sibling["lfs"] = {"sha256": r[2], "size": r[3], "pointerSize": pointer_size(r)}
        siblings.append(sibling)
    info = {
        "_id": hashlib.sha1(repo.encode()).hexdigest()[:24],
        "id": repo,
        "modelId": repo,
        "author": repo.split("/")[0],
        "sha": commit,
        "lastModified": "2026-01-01T00:00:00.000Z",
        "createdAt": "2026-01-01T00:00:00.000Z",
        "private": False,
        "gated": False,
        "disabled": False,
        "downloads": 0,
        "likes": 0,
        "tags": [],
        "library_name": "transformers",
        "siblings": siblings,
    }
    folders = sorted({os.path.dirname(r[1]) for r in rows} - {""})
    folders = sorted({"/".join(f.split("/")[: i + 1]) for f in folders for i in range(f.count("/") + 1)})
    tree = [
        {"type": "directory", "oid": hashlib.sha1(f"{commit}:{f}".encode()).hexdigest(), "size": 0, "path": f}
        for f in folders
    ]
    for r in rows:
        entry = {"type": "file", "oid": r[4], "size": r[3], "path": r[1]}
        if r[5] == "lfs":
            entry["lfs"] = {"oid": r[2], "size": r[3], "pointerSize": pointer_size(r)}
        tree.append(entry)

    base = os.path.join(root, "api", "models", repo)
    for rev in sorted({revision, commit}):
        write(os.path.join(base, "revision", rev + ".json"), info)
        write(os.path.join(base, "tree", rev + ".json"), tree)
    if revision == "main":
        write(base + ".json", info)
    print(commit)


main()
