"""Benchmarks of the job runtime against a raw redis-py loop and a bare FastStream subscriber.

Run with ``make bench`` (``python -m bench``); figures are printed and written to
``.bench/results.json``. See ``bench/__main__.py`` for the knobs (environment variables).
"""
