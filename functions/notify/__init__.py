"""Deployable source of the notify function (main.py)."""
