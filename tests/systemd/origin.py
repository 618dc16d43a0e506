#!/usr/bin/env python3
"""The systemd e2e test's model origins, on the host's 127.0.0.1 (the container shares the
host's network namespace). Usage: origin.py DIR STATEDIR TOKENFILE

Two servers, so that they are two origins (scheme, host and port):
  hub  the endpoint. HEAD/GET /{org}/{name}/resolve/{revision}/{path} answers like the Hugging
       Face Hub: 302 to the cdn with X-Repo-Commit, X-Linked-Etag and X-Linked-Size, from
       DIR/hub.json ({"org/name": {"revision", "path", "commit", "sha256", "size", "private"}},
       read on every request). A private repository answers 401 (X-Error-Code: RepoNotFound)
       unless the request carries "Authorization: Bearer <the token in TOKENFILE>".
       Also GET /files/NAME (DIR/files/NAME) and /mirror/SHA256 (DIR/mirror/SHA256).
  cdn  GET /blobs/SHA256 (DIR/mirror/SHA256).
Both honour "Range: bytes=N-". The ports are written to STATEDIR/hub_port and STATEDIR/cdn_port,
one line per request to STATEDIR/origin.log:  SERVER METHOD PATH STATUS auth=none|match|other
(`match`: the header was exactly the token; the token itself is never written)."""
import http.server
import json
import os
import sys
import threading

root, statedir, tokenfile = sys.argv[1:4]
token = open(tokenfile).read().strip()
log_lock = threading.Lock()
ports = {}


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_name_ = "?"

    def log_message(self, *args):
        pass

    def auth(self):
        auth = self.headers.get("Authorization")
        return "none" if auth is None else ("match" if auth == "Bearer " + token else "other")

    def reply(self, status, headers=(), data=b"", body=True):
        with log_lock, open(os.path.join(statedir, "origin.log"), "a") as f:
            f.write(f"{self.server_name_} {self.command} {self.path} {status} auth={self.auth()}\n")
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and data:
            self.wfile.write(data)

    def do_HEAD(self):
        self.route(body=False)

    def do_GET(self):
        self.route(body=True)

    def send_file(self, path, body):
        if not os.path.isfile(path):
            return self.reply(404, [("X-Error-Code", "EntryNotFound")], body=body)
        data = open(path, "rb").read()
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes=") and rng[6:].endswith("-") and rng[6:-1].isdigit():
            start = int(rng[6:-1])
            if start >= len(data):
                return self.reply(416, [("Content-Range", f"bytes */{len(data)}")], body=body)
            return self.reply(206, [("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")],
                              data[start:], body)
        self.reply(200, [("Content-Type", "application/octet-stream")], data, body)

    def route(self, body):
        parts = self.path.split("?")[0].strip("/").split("/")
        if any(p in ("", ".", "..") for p in parts):
            return self.reply(404, body=body)
        if self.server_name_ == "cdn":
            if len(parts) == 2 and parts[0] == "blobs":
                return self.send_file(os.path.join(root, "mirror", parts[1]), body)
            return self.reply(404, body=body)
        if len(parts) == 2 and parts[0] in ("files", "mirror"):
            return self.send_file(os.path.join(root, parts[0], parts[1]), body)
        if len(parts) >= 5 and parts[2] == "resolve":
            try:
                repos = json.load(open(os.path.join(root, "hub.json")))
            except FileNotFoundError:
                repos = {}
            repo = repos.get(parts[0] + "/" + parts[1])
            if repo is None or (repo.get("private") and self.auth() != "match"):
                return self.reply(401, [("X-Error-Code", "RepoNotFound")], body=body)
            if parts[3] not in (repo["revision"], repo["commit"]) or "/".join(parts[4:]) != repo["path"]:
                return self.reply(404, [("X-Error-Code", "EntryNotFound")], body=body)
            return self.reply(302, [
                ("Location", f"http://127.0.0.1:{ports['cdn']}/blobs/{repo['sha256']}"),
                ("X-Repo-Commit", repo["commit"]),
                ("X-Linked-Etag", '"%s"' % repo["sha256"]),
                ("X-Linked-Size", str(repo["size"])),
                ("ETag", '"%s"' % repo["sha256"]),
            ], body=body)
        self.reply(404, body=body)


servers = []
for name in ("cdn", "hub"):
    handler = type(name, (Handler,), {"server_name_": name})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    ports[name] = server.server_address[1]
    servers.append(server)
for name, port in ports.items():
    with open(os.path.join(statedir, f"{name}_port.tmp"), "w") as f:
        f.write(str(port))
    os.rename(os.path.join(statedir, f"{name}_port.tmp"), os.path.join(statedir, f"{name}_port"))
threading.Thread(target=servers[0].serve_forever, daemon=True).start()
servers[1].serve_forever()
