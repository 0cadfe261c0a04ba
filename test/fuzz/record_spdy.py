#!/usr/bin/env python3
"""Records real SPDY/3.1 exchanges as seed material for the SPDY fuzz corpora.

A loopback TCP relay between a streaming client (kubectl through the API
server) and crisp's stream server: it forwards every connection unchanged and,
once the server answered the upgrade with 101, writes what each side sent from
then on to OUT_DIR/conn<N>.client.spdy and OUT_DIR/conn<N>.server.spdy (SPDY,
or WebSocket frames when the client upgraded to WebSocket), and each side's
HTTP head to conn<N>.client.head and conn<N>.server.head. Point
crisp's stream.advertise at the relay's address so that the URLs crisp hands
out lead through it; stop the relay with SIGINT or SIGTERM.

    record_spdy.py --listen 127.0.0.1:18350 --upstream 127.0.0.1:10350 --out /tmp/rec

The files then go through `build_fuzzers.sh seed FILE...`. Only loopback
addresses are accepted on either side. Standard library only.
"""

import argparse
import ipaddress
import os
import signal
import socket
import sys
import threading

_HEAD_END = b"\r\n\r\n"
_MAX_HEAD = 64 * 1024


def _loopback(address):
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        raise argparse.ArgumentTypeError("%s is not a loopback address" % address)
    return host, int(port)


class _Direction:
    """Copies one direction and keeps what follows the HTTP head."""

    def __init__(self, source, sink, path, upgraded):
        self.source = source
        self.sink = sink
        self.path = path
        # Set by the server direction once a 101 head passed; the client
        # direction waits for it so that only SPDY bytes are kept.
        self.upgraded = upgraded
        self.head = b""
        self.head_done = False
        self.out = None

    def run(self, is_server):
        try:
            while True:
                data = self.source.recv(65536)
                if not data:
                    break
                self.sink.sendall(data)
                self._keep(data, is_server)
        except OSError:
            pass
        finally:
            if self.out is not None:
                self.out.close()
            try:
                self.sink.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _keep(self, data, is_server):
        if not self.head_done:
            self.head += data
            end = self.head.find(_HEAD_END)
            if end < 0:
                if len(self.head) > _MAX_HEAD:
                    self.head_done = True  # Not HTTP; keep nothing.
                return
            self.head_done = True
            rest = self.head[end + len(_HEAD_END):]
            # The request head, as seed material for the HTTP/1.1 head target.
            with open(self.path.rsplit(".", 1)[0] + ".head", "wb") as f:
                f.write(self.head[:end + len(_HEAD_END)])
            if is_server:
                if not self.head.startswith(b"HTTP/1.1 101"):
                    return
                self.upgraded.set()
            elif not self.upgraded.wait(timeout=30):
                return
            self.out = open(self.path, "wb")
            data = rest
        if self.out is not None and data:
            self.out.write(data)
            self.out.flush()


def _serve(client, upstream_address, out_dir, number):
    upstream = socket.create_connection(upstream_address, timeout=10)
    upstream.settimeout(None)
    upgraded = threading.Event()
    base = os.path.join(out_dir, "conn%d" % number)
    to_server = _Direction(client, upstream, base + ".client.spdy", upgraded)
    to_client = _Direction(upstream, client, base + ".server.spdy", upgraded)
    threads = [threading.Thread(target=to_server.run, args=(False,), daemon=True),
               threading.Thread(target=to_client.run, args=(True,), daemon=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    upstream.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=_loopback, required=True)
    parser.add_argument("--upstream", type=_loopback, required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    family = socket.AF_INET6 if ":" in args.listen[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(args.listen)
    listener.listen(16)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("relaying %s:%d -> %s:%d" % (args.listen + args.upstream), flush=True)
    number = 0
    try:
        while True:
            client, _ = listener.accept()
            number += 1
            threading.Thread(target=_serve, args=(client, args.upstream, args.out, number),
                             daemon=True).start()
    except KeyboardInterrupt:
        pass
    finally:
        listener.close()


if __name__ == "__main__":
    main()
