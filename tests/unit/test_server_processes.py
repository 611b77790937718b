"""The parent of SERVER_PROCESSES: the port it holds for its children, and the marker
that tells a child from a parent."""

from __future__ import annotations

import socket

import pytest

from server.__main__ import CHILD_ENV, child_marker, reserve_address
from server.config import SettingsError


def _bind(port: int, *, reuse_port: bool) -> None:
    with socket.socket() as sock:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_port_zero_becomes_one_port_held_for_the_children_and_kept_from_others():
    address, held = reserve_address("127.0.0.1:0", "GRPC_LISTEN_ADDR")
    try:
        host, _, port = address.rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
        # Sockets that share the port the way the children do may listen on it...
        _bind(int(port), reuse_port=True)
        # ...a program that does not is refused.
        with pytest.raises(OSError):
            _bind(int(port), reuse_port=False)
    finally:
        for sock in held:
            sock.close()


def test_the_holding_socket_takes_no_connection():
    address, held = reserve_address("127.0.0.1:0", "GRPC_LISTEN_ADDR")
    try:
        port = int(address.rpartition(":")[2])
        with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    finally:
        for sock in held:
            sock.close()


def test_a_port_already_served_is_refused_with_the_setting_name_even_if_shareable():
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(SystemExit, match="GRPC_TOKEN_LISTEN_ADDR"):
            reserve_address(f"127.0.0.1:{port}", "GRPC_TOKEN_LISTEN_ADDR")


def test_only_the_parent_marks_a_child():
    assert child_marker({}) is None
    assert child_marker({CHILD_ENV: "2:7", "DATABASE_URL": "postgresql://x"}) == (2, 7)
    with pytest.raises(SettingsError, match=CHILD_ENV):
        child_marker({CHILD_ENV: "two", "DATABASE_URL": "postgresql://x"})
    with pytest.raises(SettingsError, match="DATABASE_URL"):
        child_marker({CHILD_ENV: "1:7"})
