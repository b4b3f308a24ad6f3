"""A transfer over a bare TCP socket speaking the NATS text protocol: no client library at all.

    python examples/bare_tcp_transfer.py 127.0.0.1 4222 zero builder 1.5 [USER PASSWORD]

It shows every byte a client in any language needs: CONNECT, SUB to a reply inbox, PUB the
command with that inbox as the reply subject, then read the MSG carrying the result envelope.
USER and PASSWORD are a password user's (``exchange up --passwords``); an nkey user, the default,
would sign the nonce of the INFO line with its seed, which takes an Ed25519 library.
"""

import json
import socket
import sys
import uuid


def main() -> None:
    host, port, sender, recipient, amount = sys.argv[1:6]
    user, password = (sys.argv[6], sys.argv[7]) if len(sys.argv) > 7 else (None, None)
    connect = {"verbose": False, "pedantic": False, "protocol": 1, "headers": False}
    if user:
        connect |= {"user": user, "pass": password}
    # In secure mode an agent may only receive on its own inbox prefix: _INBOX_<agent>.
    inbox = f"_INBOX_{sender}.{uuid.uuid4().hex}"
    body = json.dumps({"request_id": str(uuid.uuid4()), "to": recipient, "amount": amount}).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()  # INFO {...}: the server's greeting.
        sock.sendall(f"CONNECT {json.dumps(connect)}\r\n".encode())
        sock.sendall(f"SUB {inbox} 1\r\n".encode())
        subject = f"exchange.cmd.{sender}.transfer"
        sock.sendall(f"PUB {subject} {inbox} {len(body)}\r\n".encode() + body + b"\r\n")
        sock.sendall(b"PING\r\n")
        while True:
            line = reader.readline()
            if line.startswith(b"PING"):
                sock.sendall(b"PONG\r\n")
            elif line.startswith(b"-ERR"):
                sys.exit(line.decode().strip())
            elif line.startswith(b"MSG"):
                size = int(line.split()[-1])
                payload = reader.read(size + 2)[:size]  # The payload, then \r\n.
                print(payload.decode())
                return


if __name__ == "__main__":
    main()
