"""Operators' commands for merchants: `python -m server.merchants` (docs/payments.md)."""
