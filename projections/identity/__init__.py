"""The identity read model: one projector (``accounts.IdentityProjector``) folds every event
of ``identity.accounts``; ``sessions.py`` and ``account_data.py`` hold its handlers and
queries for sessions and grants, and for API keys and profiles; ``audit.py`` its audit rows.
``rate_limits.py`` is a projector of its own over the same topic (the admins' rules)."""
