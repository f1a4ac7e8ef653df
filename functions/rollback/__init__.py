"""Deployable source of the rollback function (main.py)."""
