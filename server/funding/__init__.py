"""Operators' commands for co-lending: `python -m server.funding` (docs/risk.md)."""
