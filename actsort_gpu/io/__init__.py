"""Readers: movies (``movies``) and cell-extraction outputs (``extraction``) -> ``Candidates``.

Only this package (and ``export``) knows file formats.
"""
