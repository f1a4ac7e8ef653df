"""Deployable source of the maintain function (main.py)."""
