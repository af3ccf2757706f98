"""The Celery app, its thin tasks, and the beat schedule."""
