#!/usr/bin/env python3
"""A hostile HTTP server for doctor --from's tests: it accepts on 127.0.0.1, prints its
port, and answers every request the way MODE says (see tests/doctor.rs). It runs until
killed; the test kills it.

Usage: hostile_http.py MODE BODY_FILE [CERT KEY]
"""
import os
import socket
import ssl
import sys
import threading
import time

mode, body_path = sys.argv[1], sys.argv[2]
body = open(body_path, "rb").read()
cut = body[: len(body) * 35 // 100]
ctx = None
if mode == "tls-no-close-notify":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])


def handle(c):
    c.settimeout(10)
    if ctx is not None:
        c = ctx.wrap_socket(c, server_side=True)
    req = b""
    while b"\r\n\r\n" not in req:
        chunk = c.recv(4096)
        if not chunk:
            return
        req += chunk
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
    if mode == "silent":
        time.sleep(3600)
    elif mode == "drip":
        c.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body))
        for b in body:
            c.sendall(bytes([b]))
            time.sleep(2)
    elif mode == "short":
        # Content-Length promises the whole body; 35% of it comes, then the close.
        c.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + cut)
    elif mode == "chunked-cut":
        c.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(cut) + cut + b"\r\n")
    elif mode == "tls-no-close-notify":
        # Delimited by the close alone (HTTP/1.0), and the close has no close_notify:
        # a truncation attacker could have made it.
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n" + cut)
        os.close(c.detach())
        return
    elif mode == "endless":
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        line = b'netpressure_endless{a="b"} 1\n' * 4096
        while True:
            c.sendall(line)
    elif mode == "redirect":
        c.sendall(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/metrics\r\nContent-Length: 0\r\n\r\n")
        time.sleep(1)
    c.close()


srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0))
srv.listen(16)
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
