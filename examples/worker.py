#!/usr/bin/env python3
"""A complete sockherd worker in Python, standard library only.

It speaks the native protocol (docs/protocol.md), version 2 when the manager
does: the channel to the manager is the SOCK_SEQPACKET socket numbered
SOCKHERD_CHANNEL_FD. The worker says READY=1 (with PROTOCOL=2 when
SOCKHERD_PROTOCOL_MAX allows it); from then on each message brings one
CONN=<socket name> line per accepted connection, each with its fd (one per
message in version 1), and SHUTDOWN=1 means: no more connections will come,
finish and exit 0. Every connection gets one minimal HTTP/1.1 answer naming
the worker; once a message's connections are closed the worker says
CLOSED=<n>, which is how the manager's least-conn policy counts the
connections each worker holds. Connections are served one at a time, to keep
the example short.

Run it: sockherd serve --listen 127.0.0.1:8080 -- python3 examples/worker.py
"""

import os
import socket
import sys


def answer(conn, body):
    """Reads the request head, answers it and closes; a bad peer only ends it."""
    with conn:
        try:
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))
        except OSError:
            pass


def main():
    channel = socket.socket(fileno=int(os.environ["SOCKHERD_CHANNEL_FD"]))
    worker_id = os.environ.get("SOCKHERD_WORKER_ID", "?")
    body = f"hello from python worker {worker_id} (pid {os.getpid()})\n".encode()
    newest = os.environ.get("SOCKHERD_PROTOCOL_MAX", "1")
    speaks_2 = newest.isdigit() and int(newest) >= 2
    channel.send(b"READY=1\nPROTOCOL=2" if speaks_2 else b"READY=1")
    while True:
        # Room for the most connections one message carries (version 2).
        message, fds, _flags, _addr = socket.recv_fds(channel, 4096, 253)
        if not message:  # the manager closed the channel: it is gone
            return 0
        closed = 0
        for line in message.decode(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key == "CONN" and fds:  # the fds come in the order of the lines
                answer(socket.socket(fileno=fds.pop(0)), body)
                closed += 1
            elif key == "SHUTDOWN" and value == "1":
                return 0
        if closed:
            channel.send(b"CLOSED=%d" % closed)
        for fd in fds:  # never expected; do not leak it
            os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
