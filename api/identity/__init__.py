"""The identity context's routes: accounts, sign-in, sessions, MFA, keys, profiles, admin."""
