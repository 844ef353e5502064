"""Constants shared by test modules (conftest fixtures cannot be imported as values)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
