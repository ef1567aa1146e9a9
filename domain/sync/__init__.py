"""Convergent state for a user's library across devices: a hybrid logical clock orders
writes, registers keep the last write, observed-remove sets keep adds a remove did not see.
No I/O: the library projector folds events through these, so a replay decides alike."""
