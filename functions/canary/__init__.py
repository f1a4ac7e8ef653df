"""Deployable source of the canary function (main.py)."""
