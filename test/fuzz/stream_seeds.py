#!/usr/bin/env python3
"""Writes seed inputs for the websocket, base64, http1_head and cri_request
fuzz targets (input layouts in each target's opening comment).

    stream_seeds.py OUT_DIR [RECORDING...]

Writes OUT_DIR/<target>/<name>. Seeds come from three sources:
- exchanges written here from the protocol rules (every channel protocol,
  fragmented and control frames, v5 CLOSE signals, base64 payloads; request
  heads for every route and protocol offer; every CRI call crisp answers,
  encoded by protoc from text format);
- recordings of real kubectl sessions made by record_spdy.py and renamed as
  in recordings/: NAME.client.head (kubectl's request head) gives an
  http1_head seed; when it asked for "Upgrade: websocket", NAME.client.ws and
  NAME.crisp.ws (the frames each side sent) give websocket seeds in the
  server and client role, under the subprotocol NAME.crisp.head chose;
- malformed variants of the above (cut short, reserved bits, bad lengths).
Standard library and the system protoc only.
"""

import base64
import os
import re
import struct
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WS_PROTOCOLS = ["", "channel.k8s.io", "base64.channel.k8s.io", "v4.channel.k8s.io",
                "v4.base64.channel.k8s.io", "v5.channel.k8s.io"]
CRI_METHODS = ["Exec", "Attach", "PortForward", "ExecSync", "Version", "Status",
               "ListContainers", "ContainerStatus"]


def steer(options, chunks, wire):
    """The fuzz_input.h layout: options, chunk count, chunk sizes, wire."""
    return bytes([options, len(chunks)]) + bytes(chunks) + wire


def frame(opcode, payload, masked, fin=True, rsv=0, mask=b"\x37\xfa\x21\x3d"):
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", n)
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


def channel_message(protocol, channel, data):
    if "base64" in protocol:
        return 1, bytes([ord("0") + channel]) + base64.b64encode(data)
    return 2, bytes([channel]) + data


def ws_seeds():
    out = {}
    for p_index, protocol in enumerate(WS_PROTOCOLS):
        for role in (0, 1):
            masked = role == 0
            frames = []
            if role == 0:  # what a client sends: stdin, resize, close
                for ch, data in ((0, b"echo hello\n"), (4, b'{"Width":80,"Height":24}'),
                                 (0, b""), (7, b"unknown channel")):
                    op, body = channel_message(protocol, ch, data)
                    frames.append(frame(op, body, masked))
                if protocol.startswith("v5"):
                    frames.append(frame(2, b"\xff\x00", masked))
                frames.append(frame(9, b"ping", masked))
                frames.append(frame(8, struct.pack(">H", 1000), masked))
            else:  # what a server sends: stdout, stderr, status, close
                for ch, data in ((1, b"hello\n"), (2, b"oops\n"),
                                 (3, b'{"metadata":{},"status":"Success"}')):
                    op, body = channel_message(protocol, ch, data)
                    frames.append(frame(op, body, masked))
                frames.append(frame(8, struct.pack(">H", 1000) + b"done", masked))
            wire = b"".join(frames)
            name = "session_%s_%s" % (protocol or "none", "server" if role == 0 else "client")
            out[name] = steer(role | (p_index << 1), [], wire)
            out[name + "_bytewise"] = steer(role | (p_index << 1), [0], wire)
            out[name + "_chunks"] = steer(role | (p_index << 1) | 0x40, [6, 130, 2], wire)
    # Fragmentation with a ping in between, then a 1009 and a 1002.
    frag = (frame(2, b"\x00abc", True, fin=False) + frame(9, b"p", True) +
            frame(0, b"def", True, fin=False) + frame(0, b"ghi", True))
    out["fragmented_v5"] = steer(5 << 1, [3], frag)
    out["too_big"] = steer((5 << 1) | (1 << 5), [], frame(2, b"\x00" + b"x" * 100, True))
    out["unmasked_from_client"] = steer(0, [], frame(2, b"\x00x", False))
    out["masked_from_server"] = steer(1, [], frame(2, b"\x01x", True))
    out["reserved_bits"] = steer(0, [], frame(2, b"\x00x", True, rsv=4))
    out["bad_opcode"] = steer(0, [], frame(3, b"", True))
    out["long_ping"] = steer(0, [], frame(9, b"p" * 126, True))
    out["non_minimal"] = steer(0, [], b"\x82\xfe\x00\x05" + b"\0\0\0\0" + b"\0abcd")
    out["bad_close_code"] = steer(0, [], frame(8, struct.pack(">H", 1005), True))
    out["one_byte_close"] = steer(0, [], frame(8, b"\x03", True))
    out["close_bad_utf8"] = steer(0, [], frame(8, struct.pack(">H", 1000) + b"\xc3\x28", True))
    out["text_bad_utf8"] = steer(2 << 1, [], frame(1, b"0\xff\xfe", True))
    out["continuation_first"] = steer(0, [], frame(0, b"x", True))
    out["v5_bad_close_signal"] = steer(5 << 1, [], frame(2, b"\xff\x09", True) +
                                       frame(2, b"\xff\x00\x00", True))
    out["base64_bad_payload"] = steer(2 << 1, [], frame(1, b"0QQ=", True) + frame(1, b"0Q", True))
    out["strict_type"] = steer((2 << 1) | 0x10, [], frame(2, b"\x00abc", True))
    out["portforward_binary"] = steer(0x80, [], frame(2, b"\x00GET / HTTP/1.0\r\n\r\n", True) +
                                      frame(2, b"\x01", True))
    out["large_64bit_length"] = steer(0, [], frame(2, b"\x00" + b"y" * 70000, True))
    return out


def base64_seeds():
    texts = [b"", b"QQ==", b"QUI=", b"QUJD", b"QR==", b"QUJD\r\nREVG", b"A===", b"====",
             b"AB=A", b"QUJDRA==QQ==", b"a b=", b"+/+/", b"SGVsbG8sIHdvcmxkIQ==", b"QQ=\n=",
             b"\nQUJD\n", b"-_-_", b"dGhlIHNhbXBsZSBub25jZQ=="]
    return {"text%d" % i: t for i, t in enumerate(texts)}


def head(method, path, headers):
    lines = ["%s %s HTTP/1.1" % (method, path)] + ["%s: %s" % h for h in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def http1_seeds():
    token = "AbCdEfGhIjKlMnOpQrStUv"
    spdy = [("Host", "127.0.0.1:10350"), ("Connection", "Upgrade"), ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io, channel.k8s.io")]
    ws = [("Host", "127.0.0.1:10350"), ("Connection", "Upgrade"), ("Upgrade", "websocket"),
          ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13"),
          ("Sec-WebSocket-Protocol", "v5.channel.k8s.io, v4.channel.k8s.io")]
    heads = {
        "spdy_exec": head("POST", "/exec/" + token, spdy),
        "ws_exec": head("GET", "/exec/" + token + "?command=sh&stdin=1&stdout=1", ws),
        "ws_attach_base64": head("GET", "/attach/" + token,
                                 ws[:-1] + [("Sec-WebSocket-Protocol",
                                             "v4.base64.channel.k8s.io")]),
        "ws_portforward": head("GET", "/portforward/" + token + "?ports=80",
                               ws[:-1] + [("Sec-WebSocket-Protocol",
                                           "SPDY/3.1+portforward.k8s.io")]),
        "spdy_portforward": head("POST", "/portforward/" + token,
                                 spdy[:3] + [("X-Stream-Protocol-Version", "portforward.k8s.io")]),
        "ws_bad_version": head("GET", "/exec/" + token, ws[:4] + [("Sec-WebSocket-Version", "8")]),
        "absolute_form": head("POST", "http://127.0.0.1:10350/exec/" + token, spdy),
        "dot_segment": head("POST", "/exec/../exec/" + token, spdy),
        "percent": head("POST", "/exec/%41" + token[1:], spdy),
        "double_slash": head("POST", "//exec/" + token, spdy),
        "folded_header": b"POST /exec/" + token.encode() + b" HTTP/1.1\r\nX-Stream-Protocol-"
                         b"Version: v4.channel.k8s.io\r\n continued\r\n\r\n",
        "http10": b"GET /exec/x HTTP/1.0\r\n\r\n",
        "http2_preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "trailing_bytes": head("POST", "/exec/" + token, spdy) + b"\x80\x03\x00\x01",
        "lf_only": b"GET /exec/x HTTP/1.1\nHost: a\n\n",
        "crlf_in_protocol": head("GET", "/exec/" + token,
                                 ws[:-1] + [("Sec-WebSocket-Protocol", "a\rb")]),
    }
    out = {}
    for name, h in heads.items():
        out[name] = steer(0, [], h)
        out[name + "_small_limit"] = steer(1, [5], h)
        out[name + "_spdy_only"] = steer(2 << 2, [0, 1, 2], h)
    return out


def protoc_encode(message, text):
    proto = os.path.join(ROOT, "api/runtime/v1/api.proto")
    return subprocess.run(["protoc", "--proto_path=" + ROOT, "--encode=runtime.v1." + message,
                           proto], input=text.encode(), capture_output=True,
                          check=True).stdout


def grpc_frame(payload, compressed=0):
    return bytes([compressed]) + struct.pack(">I", len(payload)) + payload


def cri_seeds():
    requests = {
        "Exec": ["container_id: 'demo' cmd: 'sh' cmd: '-c' cmd: 'echo hi' stdout: true "
                 "stderr: true", "container_id: 'tty' cmd: 'sh' tty: true stdin: true stdout: true",
                 "container_id: 'stopped' cmd: 'true' stdout: true",
                 "container_id: 'demo' cmd: 'x' tty: true stdout: true stderr: true",
                 "container_id: 'nope' cmd: 'x' stdout: true", "cmd: 'x'"],
        "Attach": ["container_id: 'demo' stdin: true stdout: true stderr: true",
                   "container_id: 'tty' tty: true stdin: true stdout: true", "container_id: 'demo'"],
        "PortForward": ["pod_sandbox_id: 'pod' port: 80 port: 8080", "pod_sandbox_id: 'demo'",
                        "pod_sandbox_id: 'pod' port: 0", "pod_sandbox_id: 'pod' port: 70000",
                        "pod_sandbox_id: 'other' port: 1", "port: 80"],
        "ExecSync": ["container_id: 'demo' cmd: 'true' timeout: 1", "container_id: 'demo'",
                     "container_id: 'demo' cmd: 'x' timeout: -1"],
        "Version": ["version: 'v1'"],
        "Status": ["verbose: true"],
        "ListContainers": ["", "filter { id: 'demo' }", "filter { state { state: CONTAINER_RUNNING }"
                           " pod_sandbox_id: 'pod' }", "filter { label_selector { key: 'a' "
                           "value: 'b' } }"],
        "ContainerStatus": ["container_id: 'demo' verbose: true", "container_id: ''"],
    }
    out = {}
    for m_index, method in enumerate(CRI_METHODS):
        for i, text in enumerate(requests[method]):
            msg = protoc_encode(method + "Request", text)
            out["%s_%d" % (method, i)] = steer(m_index, [], grpc_frame(msg))
            out["%s_%d_split" % (method, i)] = steer(m_index, [0, 3], grpc_frame(msg) * 2)
    out["compressed"] = steer(0, [], grpc_frame(b"x", compressed=1))
    out["too_long"] = steer(8, [], grpc_frame(b"y" * 65))
    out["cut_short"] = steer(0, [], grpc_frame(b"\x0a\x04demo")[:-2])
    out["declared_huge"] = steer(0, [], b"\x00\xff\xff\xff\xff")
    return out


def recording_seeds(paths):
    """websocket and http1_head seeds from record_spdy.py's files."""
    ws, heads = {}, {}
    for path in paths:
        if not path.endswith(".client.head"):
            continue
        base = path[:-len(".client.head")]
        name = os.path.basename(base)
        with open(path, "rb") as f:
            request = f.read()
        heads["rec_" + name] = steer(0, [], request)
        heads["rec_%s_chunks" % name] = steer(0, [0, 7], request)
        if not re.search(rb"(?im)^upgrade:\s*websocket", request):
            continue
        protocol = ""
        try:
            with open(base + ".crisp.head", "rb") as f:
                m = re.search(rb"(?im)^sec-websocket-protocol:\s*(\S+)", f.read())
                protocol = m.group(1).decode() if m else ""
        except OSError:
            pass
        if protocol not in WS_PROTOCOLS:
            protocol = ""  # the SPDY tunnel and port-forward: binary framing
        p_index = WS_PROTOCOLS.index(protocol)
        portforward = b"/portforward/" in request
        for side, role in ((".client.ws", 0), (".crisp.ws", 1)):
            try:
                with open(base + side, "rb") as f:
                    wire = f.read()
            except OSError:
                continue
            options = role | (p_index << 1) | (0x80 if portforward else 0)
            tag = "rec_%s_%s" % (name, "server" if role == 0 else "client")
            ws[tag] = steer(options, [], wire[:1 << 20])
            ws[tag + "_chunks"] = steer(options, [100, 200, 3], wire[:1 << 20])
    return ws, heads


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    out_dir = sys.argv[1]
    rec_ws, rec_heads = recording_seeds(sys.argv[2:])
    seeds = {"websocket": {**ws_seeds(), **rec_ws}, "base64": base64_seeds(),
             "http1_head": {**http1_seeds(), **rec_heads}, "cri_request": cri_seeds()}
    for target, files in seeds.items():
        os.makedirs(os.path.join(out_dir, target), exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(out_dir, target, name), "wb") as f:
                f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
