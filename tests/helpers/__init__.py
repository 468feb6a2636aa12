"""Shared test helpers: plain functions and classes that test modules import.

Fixtures live in conftest.py; everything a test module imports lives here, so no test module
imports another.
"""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent
