"""The identity context's routes: accounts, sign-in (OAuth 2, device, external providers),
sessions, MFA, API keys, profiles, the admin API and the first admin.

``commands.py`` is the one way an identity command is appended and answered; ``tokens.py``
starts, rotates and revokes sessions; ``services.py`` is what the routes share (keys,
hashers, the revocation cache, mail, the rate limiter).

Two identity-born modules stay at the top of ``api/`` because every context uses them:
``api/authn.py`` (who is calling, ``require``/``optional``: catalog, playback and search
routes call it too) and ``api/ratelimit.py`` (GCRA in Redis, the ``RateLimit-*`` middleware
on every response, ``limit(request, rule)`` for any route). The other top-level modules
(errors, requests, pagination, context, consistency, limits, health) are shared plumbing.
"""
