"""Session-wide test environment: an isolated ROS 2 graph per test run, rclpy fixtures, data paths.

Set at import (before any test module imports rclpy, and inherited by subprocesses):
- ROS_DOMAIN_ID unique per run (1..101 from the pid), so parallel runs and other engineers'
  nodes on this machine never see each other (different domain IDs never match);
- ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, so nothing leaves the machine;
- RMW_IMPLEMENTATION=rmw_fastrtps_cpp, the RMW the PyPI wheels ship.

Other test files add their own fixtures; keep this file small and generic.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 101)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
for _var in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS", "FASTRTPS_DEFAULT_PROFILES_FILE"):
    os.environ.pop(_var, None)  # deprecated / would widen or change discovery


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ros: starts rclpy / talks DDS (real middleware, isolated domain)")
    config.addinivalue_line("markers", "nuscenes: needs the shared nuScenes data (skipped where absent)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def pytest_report_header(config: pytest.Config) -> str:
    return (f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} "
            f"RMW_IMPLEMENTATION={os.environ['RMW_IMPLEMENTATION']} discovery=LOCALHOST")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the directory holding package.xml)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_nuscenes() -> Path:
    """<repo>/../shared/nuscenes (a nuScenes dataroot), or skip the test where it is absent."""
    path = (REPO_ROOT / ".." / "shared" / "nuscenes").resolve()
    if not path.is_dir():
        pytest.skip(f"nuScenes data not found at {path}")
    return path


@pytest.fixture
def ros_context() -> Iterator[Any]:
    """A fresh rclpy Context, initialised for this test and shut down after it."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        rclpy.try_shutdown(context=context)


@pytest.fixture
def ros_node(ros_context: Any) -> Iterator[Any]:
    """A uniquely named rclpy Node in `ros_context`, destroyed after the test."""
    import rclpy

    node = rclpy.create_node(f"imkd_test_{uuid.uuid4().hex[:8]}", context=ros_context)
    try:
        yield node
    finally:
        node.destroy_node()


@pytest.fixture
def spin_until(ros_context: Any) -> Callable[..., bool]:
    """spin_until(node, predicate, timeout=5.0) -> bool: spin `node` until predicate() or timeout."""
    from rclpy.executors import SingleThreadedExecutor

    def _spin(node: Any, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        executor = SingleThreadedExecutor(context=ros_context)
        executor.add_node(node)
        try:
            deadline = time.monotonic() + timeout
            while not predicate():
                if time.monotonic() > deadline:
                    return False
                executor.spin_once(timeout_sec=0.05)
            return True
        finally:
            executor.remove_node(node)
            executor.shutdown(timeout_sec=1.0)

    return _spin
