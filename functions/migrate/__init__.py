"""Deployable source of the migrate function (main.py)."""
