"""rclpy API that differs between Humble (rclpy 3.3) and Jazzy (rclpy 7.x), in one place.

Each function uses the newer API where the running rclpy has it and a fallback built from
Humble's API otherwise (test/test_humble_api.py checks the package against Humble's sources;
test_node_robust.py runs the node with the Iron+ API removed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def pre_set_parameters_callback(node: Any, callback: Callable[[list[Any]], list[Any]]) -> None:
    """Call `callback(parameters)` before rclpy checks a parameter change (read-only, ranges,
    types) - Node.add_pre_set_parameters_callback on Iron and later.

    Humble's rclpy has no such hook, and its own checks refuse a change without calling the
    on-set callbacks. The fallback wraps the node's `set_parameters` and
    `set_parameters_atomically` (which the parameter services call) so the callback still sees
    every requested change first."""
    if hasattr(node, "add_pre_set_parameters_callback"):
        node.add_pre_set_parameters_callback(callback)
        return
    for name in ("set_parameters", "set_parameters_atomically"):
        original = getattr(node, name)

        def wrapped(parameter_list: list[Any], _original: Callable[..., Any] = original) -> Any:
            return _original(callback(list(parameter_list)))

        setattr(node, name, wrapped)


def publisher_count(node: Any, subscription: Any) -> int:
    """Publishers matched with `subscription` (Subscription.get_publisher_count is Iron+; Humble
    counts the topic's publishers in the graph instead)."""
    if hasattr(subscription, "get_publisher_count"):
        return int(subscription.get_publisher_count())
    return int(node.count_publishers(subscription.topic_name))


def make_executor(kind: str, threads: int = 0, context: Any = None) -> tuple[Any, str]:
    """(executor for the input callbacks, the kind used): 'events' needs
    rclpy.experimental.EventsExecutor (Jazzy's rclpy >= 7.1.4); where rclpy lacks it (Humble)
    'single' stands in: both run the callbacks on one thread, the inference has its own."""
    if kind == "events":
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            kind = "single"
        else:
            return EventsExecutor(context=context), "events"
    from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

    if kind == "multi":
        return MultiThreadedExecutor(num_threads=threads or 8, context=context), "multi"
    return SingleThreadedExecutor(context=context), "single"
