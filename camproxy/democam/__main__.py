"""``python -m camproxy.democam``: an emulated camera alone, for testing any client.

``--kind robocam`` (the default) is the RoboCam WebSocket firmware; ``--kind esp32``,
``esp32-cam-webserver``, ``mjpeg`` and ``jpeg`` are the HTTP cameras (``--kind KIND --help``).
"""

from camproxy.democam.robocam import main

main()
