"""The edges: bytes <-> API calls, exceptions -> codes. Nothing imports this package."""
