"""``python -m camproxy.democam``: an emulated camera alone, for testing any client."""

from camproxy.democam.robocam import main

main()
