"""Benchmark harness for wsproto_trio: load generator, ceilings, report (not in the package).

It is a package so that ``hypercorn bench.ceiling_asgi:app`` and ``multiprocessing`` spawn can
import its modules by name from the repository root.
"""
