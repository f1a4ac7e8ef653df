"""Deployable source of the console and slack_actions functions (main.py)."""
