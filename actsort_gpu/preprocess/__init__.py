"""Preprocessing: per-candidate geometry, events, and one sequential pass over the movie that
produces the FOV images and the event snapshots (reference section 2). See :func:`preprocess`."""

from .run import SNAPSHOT_DTYPES, preprocess, resolve_movie_path

__all__ = ["preprocess", "resolve_movie_path", "SNAPSHOT_DTYPES"]
