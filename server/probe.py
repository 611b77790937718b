"""Waiting for a server to report SERVING over the standard health service, for
launchers, load generators and tests that start the server as a process."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def wait_until_serving(address: str, timeout_s: float, still_running: Callable[[], bool],
                       credentials: grpc.ChannelCredentials | None = None) -> None:
    """Return once `address` answers SERVING; raise RuntimeError when the process stops
    (`still_running()` turns False) or `timeout_s` passes first."""
    deadline = time.monotonic() + timeout_s
    channel = (grpc.secure_channel(address, credentials) if credentials is not None
               else grpc.insecure_channel(address))
    with channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if not still_running():
                raise RuntimeError(f"the server at {address} exited before it was serving")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(), timeout=1)  # type: ignore[attr-defined]  # stubs: HealthStub lacks its methods
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server at {address} was not serving within {timeout_s} s")
            time.sleep(0.1)
