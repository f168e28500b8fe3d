"""Metrics of a result: the paper's CLIP direction score, once (``direction``).

The Rank Candidates node and the ``python -m analogist score`` evaluator both call it.
"""
