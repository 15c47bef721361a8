"""Argument types shared by the management commands (``type=`` of argparse)."""

import argparse


def positive_int(value: str) -> int:
    """A whole number ≥ 1 (``_`` separators allowed: ``100_000``)."""
    number = _int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def non_negative_int(value: str) -> int:
    number = _int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more, got {value}")
    return number


def positive_int_list(value: str) -> list[int]:
    """Comma-separated positive whole numbers, e.g. ``100000,1000000``."""
    numbers = [positive_int(part) for part in value.split(",") if part.strip()]
    if not numbers:
        raise argparse.ArgumentTypeError(f"positive integers expected: {value}")
    return numbers


def _int(value: str) -> int:
    try:
        return int(value.strip().replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value}") from None
