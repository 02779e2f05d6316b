"""Users, sessions, API tokens, passwords, access decisions and the store that keeps them.
Nothing here knows of frames or cameras' video; it imports nothing outside ``accounts``."""
