"""Emulated cameras for the demo and the tests. They import nothing else of CamProxy.

``robocam``: the RoboCam WebSocket firmware. ``esp32``: Espressif's ``CameraWebServer`` and
esp32-cam-webserver. ``mjpeg``: generic MJPEG stream and JPEG snapshot servers. ``httpcam`` and
``httpwire``: what the HTTP ones share. ``httpcli``: their command line.
"""
