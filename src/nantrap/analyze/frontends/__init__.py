"""Graph frontends: each turns one framework's graph into ``nantrap.analyze.ir.Graph``.

These are the only modules of the analyzer that import a framework, and they do it
inside their functions.
"""
