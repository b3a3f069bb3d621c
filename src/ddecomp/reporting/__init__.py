"""Reporting: figures and side-by-side comparisons of what prepare, plan and train produced.

- :mod:`.plots`: PNG figures for ``ddecomp stats --plot`` and ``ddecomp plan --plot``.
- :mod:`.compare`: ``ddecomp compare RUN ...``: a table and a figure of loss vs tokens and time.
"""
