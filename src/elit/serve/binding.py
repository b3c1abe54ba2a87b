"""Where `elit serve` listens, and who may reach it: the checks made before a model is loaded.

- An API key that is set but empty (`ELIT_API_KEY=""`) would turn authentication off without a word
  (keyless requests pass, every key fails): refused.
- A non-loopback address without a key would serve anyone who can reach the machine: refused
  unless the user names the opt-out (--insecure-no-api-key), and then said out loud at start.
- The socket is bound here, before the models load, and the address printed is the one bound (port 0
  prints the port the kernel chose), so the printed URL is where the server is.
"""
from __future__ import annotations

import ipaddress
import socket

from elit.errors import UserError

OPT_OUT = "--insecure-no-api-key"


def check_api_key(key: str | None) -> str | None:
    """The key to require, or None for none; an empty or blank key is refused."""
    if key is None:
        return None
    if not key.strip():
        raise UserError("the API key is empty (ELIT_API_KEY or --api-key is set to ''), which would turn "
                        "authentication off; set a real key, or unset ELIT_API_KEY to serve on loopback without one")
    return key


def _addresses(host: str) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host or None, None, type=socket.SOCK_STREAM,
                                                                  flags=socket.AI_PASSIVE)})
    except socket.gaierror as e:
        raise UserError(f"--host {host!r} is not an address this machine can listen on ({e.strerror}); "
                        f"use 127.0.0.1 (loopback) or an address of this machine") from None


def is_loopback(host: str) -> bool:
    """Does every address `host` names belong to this machine only (127.0.0.0/8, ::1)?"""
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in _addresses(host))


def check_exposure(host: str, api_key: str | None, insecure: bool, announce=print) -> None:
    """Refuse to listen beyond loopback without a key, unless the user named the opt-out."""
    if api_key is not None or is_loopback(host):
        return
    if not insecure:
        raise UserError(f"--host {host} is reachable from other machines and no API key is set: set ELIT_API_KEY "
                        f"(or --api-key) so that only key holders can use the server, or pass {OPT_OUT} to serve "
                        f"everyone who can reach {host}")
    announce(f"elit serve: WARNING: listening on {host} without an API key ({OPT_OUT}): anyone who can reach this "
             f"machine can generate images and read /v1/status and /metrics")


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 takes a free one."""
    if not 0 <= port <= 65535:
        raise UserError(f"--port must lie in 0..65535 (0: any free port), got {port}")
    family = socket.AF_INET6 if ":" in _addresses(host)[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another --port (or --port 0 "
                        f"for any free one) or stop what holds it") from None
    return sock


def url(sock: socket.socket) -> str:
    """The http:// address a socket from `listen` serves."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
