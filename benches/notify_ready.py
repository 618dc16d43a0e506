"""Time from spawn to READY=1 of a Type=notify service, for benches/fetch.sh.

Usage: python notify_ready.py LOG CMD [ARG...]
Binds a Unix datagram socket, runs CMD with NOTIFY_SOCKET pointing at it (stdout and stderr to
LOG), waits for a datagram holding the line READY=1, sends SIGTERM and waits for the exit.
Prints "<ms from spawn to READY=1> <exit status>".
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

log, cmd = sys.argv[1], sys.argv[2:]
with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    env = dict(os.environ, NOTIFY_SOCKET=path)
    env.pop("WATCHDOG_USEC", None)
    with open(log, "ab") as out:
        start = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        try:
            while True:
                message = sock.recv(65536)
                if b"READY=1" in message.split(b"\n"):
                    break
            ready = time.monotonic()
        except socket.timeout:
            proc.kill()
            proc.wait()
            sys.exit(f"no READY=1 within 30 s (see {log})")
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(timeout=30)
print(f"{(ready - start) * 1000:.1f} {status}")
