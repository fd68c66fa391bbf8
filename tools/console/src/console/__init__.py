"""The operations console: queues, dead letters and paused groups on one web page.

A face on :mod:`servicekit.operations` (the same functions `jobsctl` calls), for operators holding a
console token; see ``app.create_app``.
"""
