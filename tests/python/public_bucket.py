"""An S3 front door that behaves like a public bucket beside private ones.

Forwards every request to an S3 server (moto) and refuses, with S3's 403 AccessDenied:
a *signed* request to one of the public buckets (so a client that reaches them must send
no credentials at all, as a user without an AWS account does), and an *unsigned* request
to any other bucket (so a client cannot pass the test by dropping signatures
everywhere). Path-style addressing (`/bucket/key`), as object_store uses with an endpoint.

usage: public_bucket.py UPSTREAM PUBLIC[,PUBLIC...]   (prints the port it listens on)
"""
import http.client
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UPSTREAM = urllib.parse.urlparse(sys.argv[1])
PUBLIC = set(sys.argv[2].split(","))
DENIED = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>%s</Message></Error>"""


class Gate(BaseHTTPRequestHandler):
    # One request per connection (every response says `Connection: close`): simple, and
    # clients never reuse a connection this server is about to drop.
    protocol_version = "HTTP/1.1"

    def end_headers(self):
        self.send_header("Connection", "close")
        self.close_connection = True
        super().end_headers()

    def log_message(self, *args):
        pass

    def handle_any(self):
        url = urllib.parse.urlparse(self.path)
        bucket = url.path.lstrip("/").split("/", 1)[0]
        query = urllib.parse.parse_qs(url.query)
        signed = "Authorization" in self.headers or "X-Amz-Signature" in query
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if bucket in PUBLIC and signed:
            return self.deny(b"public bucket: this test server refuses signed requests")
        if bucket not in PUBLIC and not signed:
            return self.deny(b"private bucket: anonymous requests are refused")
        upstream = http.client.HTTPConnection(UPSTREAM.hostname, UPSTREAM.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        # A HEAD response has no body but keeps the object's Content-Length.
        hop = ("transfer-encoding", "connection", "server", "date")
        hop += () if self.command == "HEAD" else ("content-length",)
        for k, v in response.getheaders():
            if k.lower() not in hop:
                self.send_header(k, v)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    def deny(self, why):
        data = DENIED % why
        self.send_response(403)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def handle_guarded(self):
        try:
            self.handle_any()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (a cancelled read); nothing to answer

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_guarded


server = ThreadingHTTPServer(("127.0.0.1", 0), Gate)
print(server.server_address[1], flush=True)
server.serve_forever()
