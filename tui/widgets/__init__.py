"""Reusable widgets: modal dialogs, bar charts."""
