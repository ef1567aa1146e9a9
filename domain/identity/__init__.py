"""Identity building blocks: pure functions and small value types, no I/O.

Passwords, TOTP, opaque tokens and API keys, sealing, JWTs, PKCE, device user codes,
roles and scopes, parental ratings. The projector, the API and the key store on disk
(``core/keys.py``) compose them; none of them opens a file (apart from the bundled
common-password list), a socket or a connection. docs/identity.md has the module map.
"""
