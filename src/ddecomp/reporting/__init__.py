"""Reporting: figures and side-by-side comparisons of what prepare, plan and train produced.

- :mod:`.plots`: every PNG figure (``ddecomp stats --plot``, ``plan --plot``, ``compare --plot``)
  and the one look they share.
- :mod:`.compare`: ``ddecomp compare RUN ...``: loads runs and tabulates loss vs tokens and time.
- :mod:`.retrieval`: the runs' ``ddecomp eval`` results (``RUN/eval_<task>.json``): a table per
  task and the accuracy-per-length panel of ``compare --plot``.
- :mod:`.sources`: runs on a blend: per-source loss table and figure (``compare --plot-sources``).
"""
