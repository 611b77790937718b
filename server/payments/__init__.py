"""The payment gateway seam from our side: the typed client (gateway.py) and the
conversions between its messages and the domain's payments (messages.py)."""
