"""Deployable source of the backup and backup_drill functions (main.py)."""
