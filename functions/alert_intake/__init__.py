"""Deployable source of the alert_intake function (main.py)."""
