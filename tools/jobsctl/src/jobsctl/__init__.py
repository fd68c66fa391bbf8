"""jobsctl: the operator CLI of notes-platform, a face on :mod:`servicekit.operations`.

A tool, not a library and not a service: nothing imports it, no service image installs it.
Every figure and every change it shows comes from that module; this package only parses
arguments, resolves names against the topology in contracts, and renders tables or JSON.
"""
