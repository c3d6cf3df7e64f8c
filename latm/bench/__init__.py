"""Benchmarks of LATM.

``latm bench`` (:mod:`latm.bench.runner`) reproduces the paper's protocol: six
tasks, demos 0-2 / validation 5-7 / test 10-249, exact-match scoring, tool making
through the graph then answering through its cache-hit path, compared with
few-shot chain-of-thought by the user and the maker model, with token costs
(:mod:`latm.bench.costs`) and a report (:mod:`latm.bench.report`).
"""
